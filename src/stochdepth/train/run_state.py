"""A run's state beside its model and optimizer: counters, the evaluation window, the random states.

Each component owns its checkpoint state (``state_dict`` / ``from_state_dict`` or
``load_state_dict``) and checks what it reads back, since a checkpoint from elsewhere is
untrusted input: a valid digest is not a valid value. The trainer composes them with the
model's, optimizer's, gates' and data order's own state dicts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from stochdepth.train.distributed import Ranks
from stochdepth.train.progress import write_line


def _count(value: object, name: str, largest: int) -> int:
    """A counter read from a checkpoint: an integer in [0, largest], else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= largest:
        raise ValueError(f"{name} must be an integer in [0, {largest}], got {value!r}")
    return value


def checked_amount(value: object, name: str, allow: tuple[float, ...] = ()) -> float:
    """A non-negative finite number read from a checkpoint (or one of ``allow``: inf, nan), else ``ValueError``."""
    number = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
    valid = isinstance(number, (int, float)) and not isinstance(number, bool)
    if valid and ((math.isfinite(number) and number >= 0) or any(_same(number, special) for special in allow)):
        return float(number)
    raise ValueError(f"{name} must be a non-negative number, got {value!r}")


def _same(number: float, special: float) -> bool:
    return math.isnan(number) if math.isnan(special) else number == special


def checked_best(values: object) -> dict[str, Any]:
    """A checkpoint's best-so-far record: ``epoch`` (none yet, or a number), ``val_error`` (inf before any),
    ``test_error`` (nan when not measured); else ``ValueError``."""
    if not isinstance(values, dict) or set(values) != {"epoch", "val_error", "test_error"}:
        raise ValueError(f"best must hold epoch, val_error and test_error, got {values!r}")
    epoch = values["epoch"]
    if epoch is not None:
        checked_amount(epoch, "best.epoch")
    return {
        "epoch": epoch,
        "val_error": checked_amount(values["val_error"], "best.val_error", (math.inf,)),
        "test_error": checked_amount(values["test_error"], "best.test_error", (math.nan,)),
    }


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


@dataclass
class Counters:
    """Where the run is and what it has found: the numbers a checkpoint keeps beside the components' states.

    ``best`` is the evaluation with the lowest validation error so far (the paper's model
    selection); ``final`` the last evaluation's errors.
    """

    epoch: int = 0
    iteration: int = 0
    evaluations: int = 0
    skipped_steps: int = 0
    train_seconds: float = 0.0
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "val_error": math.inf, "test_error": math.nan})
    final: dict[str, float] = field(default_factory=dict)
    evaluation_owed: bool = False
    """A signal stopped an evaluation: a resume does it before training on."""

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Any], epochs: int, steps_per_epoch: int, data_position: object
    ) -> Counters:
        """The counters of a checkpoint, checked: in range, and consistent with each other and the data position."""
        epoch = _count(state["epoch"], "epoch", epochs)
        iteration = _count(state["iteration"], "iteration", epochs * steps_per_epoch)
        if not epoch * steps_per_epoch <= iteration <= (epoch + 1) * steps_per_epoch:
            raise ValueError(f"iteration {iteration} is not in epoch {epoch + 1}")
        if data_position not in (0, iteration - epoch * steps_per_epoch):
            raise ValueError(f"data_position {data_position!r} does not match iteration {iteration}")
        return cls(
            epoch=epoch,
            iteration=iteration,
            evaluations=_count(state["evaluations"], "evaluations", iteration + 1),
            skipped_steps=_count(state.get("skipped_steps", 0), "skipped_steps", iteration),
            train_seconds=checked_amount(state["train_seconds"], "train_seconds"),
            best=checked_best(state["best"]),
            final={
                key: checked_amount(value, f"final.{key}", (math.nan,)) for key, value in dict(state["final"]).items()
            },
            evaluation_owed=_flag(state.get("evaluation_owed", False), "evaluation_owed"),
        )


@dataclass
class Window:
    """Running sums of the training steps since the last evaluation.

    The sums stay on the device and are read only when evaluating (or for progress), so a
    training step never waits for the host. The loss is summed in float64: each term (a
    float32 mean times a batch size) and their sum are then exact, so the sum does not depend
    on the order of its terms, and a data-parallel run resumed from a checkpoint (which keeps
    every rank's sums on rank 0) records the same training loss as one never interrupted.
    """

    loss_sum: torch.Tensor
    wrong: torch.Tensor
    images: int
    steps: int
    seconds: float
    lr: float

    @classmethod
    def empty(cls, device: torch.device, lr: float) -> Window:
        zero = torch.zeros((), device=device)
        return cls(zero.clone().double(), zero.clone().long(), 0, 0, 0.0, lr)

    def totals(self, ranks: Ranks) -> tuple[float, int, int]:
        """(loss sum, misclassified, images) over every rank's share of the batches."""
        images = torch.tensor(float(self.images), dtype=torch.float64, device=self.wrong.device)
        loss_sum, wrong, images = ranks.sum(torch.stack([self.loss_sum.double(), self.wrong.double(), images])).tolist()
        return loss_sum, round(wrong), round(images)

    def without_sums(self) -> Window:
        window = Window.empty(self.loss_sum.device, self.lr)
        window.steps, window.seconds = self.steps, self.seconds
        return window

    def gathered(self, ranks: Ranks) -> Window:
        """The sums of every rank on rank 0, none on the others: how a checkpoint keeps a window."""
        loss_sum, wrong, images = self.totals(ranks)
        window = self.without_sums()
        if ranks.is_main:
            window.loss_sum.fill_(loss_sum)
            window.wrong.fill_(wrong)
            window.images = images
        return window

    def add(self, mean_loss: torch.Tensor, wrong: torch.Tensor, images: int) -> None:
        self.loss_sum += mean_loss.double() * images
        self.wrong += wrong
        self.images += images
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        """The window as a checkpoint keeps it (after :meth:`gathered`: every rank's sums on rank 0)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, values: dict[str, Any], device: torch.device, max_steps: int) -> Window:
        """A window from a checkpoint, every value checked (``ValueError`` names the first bad one)."""
        loss_sum, wrong = values["loss_sum"], values["wrong"]
        for name, sum_ in (("loss_sum", loss_sum), ("wrong", wrong)):
            if not isinstance(sum_, torch.Tensor) or sum_.numel() != 1:
                raise ValueError(f"window.{name} must be a one-value tensor, got {sum_!r}")
            checked_amount(sum_, f"window.{name}")
        return cls(
            loss_sum.to(device, torch.float64).reshape(()),
            wrong.to(device, torch.long).reshape(()),
            _count(values["images"], "window.images", 10**15),
            _count(values["steps"], "window.steps", max_steps),
            checked_amount(values["seconds"], "window.seconds"),
            checked_amount(values["lr"], "window.lr"),
        )


class RandomStates:
    """This process's torch (and CUDA) random state, and every rank's in a checkpoint.

    Each rank draws dropout from its own stream (``Ranks.seed_own_stream``), so a checkpoint
    keeps every rank's state (gathered on rank 0) and a resumed rank takes its own back; on
    another number of ranks, those without a saved state keep the stream they were seeded with.
    """

    def __init__(self, device: torch.device, ranks: Ranks) -> None:
        self.device = device
        self.ranks = ranks

    def own(self) -> dict[str, torch.Tensor]:
        own = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            own["cuda"] = torch.cuda.get_rng_state(self.device)
        return own

    def state_dict(self) -> dict[str, Any]:
        """This rank's state at the top level (as format 1 kept it) and, with several ranks, ``ranks``: every one's."""
        own = self.own()
        every_rank = self.ranks.gather(own)
        return {**own, "ranks": every_rank} if len(every_rank) > 1 else own

    def load_state_dict(self, state: dict[str, Any]) -> None:
        every_rank = state.get("ranks") or [state]
        if len(every_rank) != self.ranks.world_size:
            write_line(
                f"resuming a run checkpointed by {len(every_rank)} process(es) on {self.ranks.world_size}: the data "
                "order, augmentation and gates continue exactly, the rest not bit-exactly (BatchNorm statistics "
                "and dropout see other batches)"
            )
        if self.ranks.rank >= len(every_rank):
            return
        own = every_rank[self.ranks.rank]
        torch.set_rng_state(own["torch"])
        if "cuda" in own and self.device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda"], self.device)
