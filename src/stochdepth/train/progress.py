"""What a run prints while it trains: a progress bar on a terminal, a line a minute elsewhere.

With output redirected (a log file, a job scheduler) a bar would write control characters
into the log, and an epoch can take many minutes; a plain progress line at a fixed interval
tells the reader the run is alive without flooding the file.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from tqdm import tqdm

LINE_EVERY_SECONDS = 60.0
_silent = False


def percent(fraction: Any) -> str:
    """An error rate as people read it: ``7.86%``, or ``n/a`` where none was measured.

    The one unit for people (every line the library and the command line print); the JSON and
    CSV files keep fractions.
    """
    is_number = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    return f"{100 * fraction:.2f}%" if is_number and math.isfinite(fraction) else "n/a"


def silence() -> None:
    """From now on this library shows no progress or result lines in this process (a data-parallel rank other than 0).

    Only this library's own lines: Python's warnings filters are left alone (the command line
    silences warnings on ranks other than 0 itself). Errors still reach the user.
    """
    global _silent
    _silent = True


class Progress:
    """One epoch's progress: ``update()`` after each step, ``show(**values)`` when values are at hand."""

    def __init__(self, total: int, done: int, label: str, bar: bool, line_every: float = LINE_EVERY_SECONDS) -> None:
        self.total = total
        self.done = done
        self.label = label
        self.line_every = line_every
        self.next_line = time.monotonic() + line_every
        self.bar = None
        if bar and not _silent:
            self.bar = tqdm(total=total, initial=done, desc=label, unit="batch", leave=False, dynamic_ncols=True)

    def wants_values(self, steps: int, every: int) -> bool:
        """Whether the caller should compute the running values now (they cost a host synchronisation)."""
        if self.bar is not None:
            return steps % every == 0
        return time.monotonic() >= self.next_line

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update()

    def tick(self) -> None:
        """:meth:`update`, and without a bar a line when one is due: for work with no values to show (evaluation)."""
        self.update()
        if self.bar is None and time.monotonic() >= self.next_line:
            self.show()

    def show(self, **values: Any) -> None:
        if _silent:
            return
        text = {key: f"{value:.3f}" if isinstance(value, float) else str(value) for key, value in values.items()}
        if self.bar is not None:
            self.bar.set_postfix(text)
            return
        details = "  ".join(f"{key} {value}" for key, value in text.items())
        print(f"{self.label}: batch {self.done}/{self.total}  {details}", file=sys.stderr, flush=True)
        self.next_line = time.monotonic() + self.line_every

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def write_line(text: str) -> None:
    """A result line on standard output that does not tear a progress bar."""
    if _silent:
        return
    tqdm.write(text, file=sys.stdout)
