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


def stopped_by_signal(name: str, iteration: int, when: str, where_to_resume: str) -> TrainingStopped:
    """The exception a signal-stopped run ends with (exit status 128 + the signal's number).

    ``when`` says where in the run: ``"in epoch 2"`` or ``"after epoch 3"``.
    """
    return TrainingStopped(
        f"stopped by {name} after iteration {iteration} ({when}); checkpoint written; {where_to_resume}",
        exit_code=128 + int(signal.Signals[name]),
    )


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Until training takes over the signals, SIGTERM raises :class:`TrainingStopped` (exit 143).

    Without it a SIGTERM while the data loads or the run folder is being set up would kill
    the process on the spot, with no message and the folder's lock and ``checkpoints/`` left
    behind; as an exception, the folder's setup is undone like any failed start. SIGINT
    already raises ``KeyboardInterrupt``. Outside the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signal_number: int, frame: object) -> None:
        raise TrainingStopped(
            "stopped by SIGTERM before training started; nothing was kept", exit_code=128 + signal.SIGTERM
        )

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
