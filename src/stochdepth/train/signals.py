"""Stopping a run on purpose: SIGTERM/SIGINT finish the step, checkpoint and exit with 128 + signal."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Protocol


class TrainingStopped(Exception):
    """Training stopped before its end on purpose; the message says why and how to go on."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class PeerFailed(Exception):
    """Another rank of a data-parallel run failed; this one stops too (the failing rank reports the error)."""


class Stoppable(Protocol):
    stop_signal: str | None


@contextlib.contextmanager
def stop_on_signals(target: Stoppable) -> Iterator[None]:
    """While training, SIGTERM and SIGINT set ``target.stop_signal``; the loop then checkpoints and stops.

    A second SIGINT (Ctrl-C twice) interrupts at once. Outside the main thread (where
    Python cannot take signals) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signal_number: int, frame: object) -> None:
        if target.stop_signal is not None and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        target.stop_signal = signal.Signals(signal_number).name

    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def stopped_by_signal(name: str, iteration: int, epoch: int, where_to_resume: str) -> TrainingStopped:
    """The exception a signal-stopped run ends with (exit status 128 + the signal's number)."""
    return TrainingStopped(
        f"stopped by {name} after iteration {iteration} (epoch {epoch + 1}); checkpoint written; {where_to_resume}",
        exit_code=128 + int(signal.Signals[name]),
    )
