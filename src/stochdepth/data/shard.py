"""A process's share of the data in data-parallel training (``torchrun``, one process per device)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count``: the rows of each batch (training) or of a set (evaluation) one process takes.

    Training: every process draws the same global order and batch and takes :meth:`rows`
    of it, so the union over processes is exactly the single-process batch. Evaluation:
    every process takes :meth:`rows` of the set, and the counts are summed across processes.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist")

    def rows(self, total: int) -> slice:
        """This shard's contiguous rows of ``total`` (shares differ by at most one row)."""
        return slice(total * self.index // self.count, total * (self.index + 1) // self.count)


WHOLE = Shard()
"""All the data: the one process of a run without torchrun."""
