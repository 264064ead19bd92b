"""The run folder: the files that the report, the sweeps and users' own scripts read.

``config.json``     the resolved configuration, the library and torch versions, the device,
                    every block's survival probability and the data spec (classes, channels,
                    size, normalisation mean and std)
``metrics.jsonl``   one JSON object per evaluation (errors are fractions)
``metrics.csv``     the same records as a table (one row per evaluation, ``METRIC_KEYS`` as columns),
                    for spreadsheets, pandas or any plotting tool; rewritten from ``metrics.jsonl``
``gradients.jsonl`` (with ``--record-gradients-every``) one object per recording step
``summary.json``    best_epoch, best_val_error, test_error_at_best_val, final_test_error, train_seconds
``checkpoints/last.pt`` and ``checkpoints/best.pt`` (best by validation error, never by test)
``run.lock``        held (``flock``) by the process training into the folder

Rules: a process takes the lock before it creates, deletes or writes anything in the folder;
a folder without ``config.json`` that holds only what a failed start leaves (``run.lock``, an
empty ``checkpoints/``, temporary files) counts as empty; temporary files of a killed writer
are removed by the next process that takes the lock. Files are opened without following
symbolic links, so a folder received from someone else cannot redirect a write.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stochdepth.config import TrainConfig
from stochdepth.files import WriteFailed, write_text_atomically
from stochdepth.train.setup import resolve_config

METRIC_KEYS = (
    "epoch",
    "iteration",
    "train_loss",
    "train_error",
    "val_error",
    "test_error",
    "lr",
    "mean_active_blocks",
    "epoch_seconds",
    "images_per_second",
)


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked; the message says why."""


FRACTIONS = ("train_error", "val_error", "test_error")
"""Record values that are error rates: in [0, 1], or NaN where not measured."""

LARGEST = 1e12
"""No count, time or loss in a record is larger (a bound that keeps sums finite)."""


def is_number(value: Any) -> bool:
    """A JSON number (``bool`` is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def in_range(key: str, value: float) -> bool:
    """Whether a record's ``key`` may hold ``value``: error rates in [0, 1], the rest bounded; NaN: not measured."""
    if key in FRACTIONS:
        return math.isnan(value) or 0.0 <= value <= 1.0
    return math.isnan(value) or -LARGEST <= value <= LARGEST


def check_metric_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Every record holds a number in range for each of ``METRIC_KEYS`` (text, such as a spreadsheet formula, never
    reaches ``metrics.csv`` or a report); ``RunFolderError`` names the file and the line."""
    for number, record in enumerate(records, 1):
        if not all(is_number(record.get(key)) for key in METRIC_KEYS):
            raise RunFolderError(f"{path}: line {number} lacks numbers for {', '.join(METRIC_KEYS)}")
        wrong = [key for key in METRIC_KEYS if not in_range(key, record[key])]
        if wrong:
            raise RunFolderError(f"{path}: line {number} has values out of range ({', '.join(wrong)})")


class RunFolderBusy(RunFolderError):
    """Another live process holds the folder's lock."""


LEFTOVERS = ("run.lock", "checkpoints")


def write_text_safely(path: Path, text: str, append: bool = False) -> None:
    """Write (or append) ``text`` to ``path``, a regular file or none yet (never a link or a FIFO), flushed to disk.

    Raises ``OSError`` (``ELOOP`` for a link) like ``open`` does.
    """
    descriptor = open_regular_file(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC))
    with os.fdopen(descriptor, "a" if append else "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def open_regular_file(path: Path, flags: int) -> int:
    """``os.open`` that never follows a symbolic link, never blocks on a FIFO, and opens regular files only.

    ``OSError`` (``ELOOP`` for a link, ``EINVAL`` "not a regular file" for a FIFO, a device or
    a folder) otherwise; opened for writing, a file with other hard links is refused too
    (``EMLINK``): writing would change the other names' content.
    """
    descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        os.close(descriptor)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    if flags & (os.O_WRONLY | os.O_RDWR) and status.st_nlink > 1:
        os.close(descriptor)
        raise OSError(errno.EMLINK, "has other hard links; a run never writes through one", str(path))
    os.set_blocking(descriptor, True)
    return descriptor


class RunFolder:
    """Paths and reads/writes of one run folder."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.metrics_table = self.path / "metrics.csv"
        self.summary = self.path / "summary.json"
        self.gradients = self.path / "gradients.jsonl"
        self.checkpoints = self.path / "checkpoints"

    def checkpoint(self, which: str) -> Path:
        """``checkpoints/last.pt`` or ``checkpoints/best.pt``."""
        if which not in ("last", "best"):
            raise ValueError(f"checkpoint must be 'last' or 'best', got {which!r}")
        return self.checkpoints / f"{which}.pt"

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Create the folder if needed and hold its lock while the block runs.

        Nothing in the folder is created, deleted or written before the lock is held. Under the
        lock, temporary files left by a killed writer are removed. If the block fails before
        ``config.json`` exists, what this call created (the folder, or only ``run.lock``) is removed.
        """
        try:
            if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
                raise RunFolderError(f"{self.path} exists and is not a folder")
            missing = [folder for folder in (self.path, *self.path.parents) if not folder.exists()]
            lock_existed = (self.path / "run.lock").exists()
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"cannot create run folder {self.path}: {error.strerror or error}") from None
        try:
            with RunLock(self.path / "run.lock"):
                self._remove_temporaries()
                yield
        except BaseException:
            if missing and not self.config.exists():
                self._remove_leftovers()
                for folder in missing[1:]:  # the parents this call created, deepest first, if empty
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            elif not lock_existed and not self.config.exists():
                with contextlib.suppress(OSError):
                    (self.path / "run.lock").unlink()
            raise

    def _remove_temporaries(self) -> None:
        for folder in (self.path, self.checkpoints):
            if folder.is_dir() and not folder.is_symlink():
                for leftover in folder.glob(".*.tmp"):
                    if leftover.is_file() or leftover.is_symlink():
                        leftover.unlink()

    def _remove_leftovers(self) -> None:
        with contextlib.suppress(OSError):
            if self.checkpoints.is_dir() and not self.checkpoints.is_symlink():
                self.checkpoints.rmdir()
            (self.path / "run.lock").unlink(missing_ok=True)
            self.path.rmdir()

    def prepare_new_run(self) -> None:
        """Under the lock: check the folder holds no run and nothing of the user's, and make ``checkpoints/``."""
        others = sorted(path.name for path in self.path.iterdir() if path.name not in LEFTOVERS)
        stray_checkpoints = self.checkpoints.is_dir() and any(self.checkpoints.iterdir())
        if others or stray_checkpoints or self.checkpoints.is_symlink():
            raise RunFolderError(
                f"{self.path} exists and is not empty; resume the run in {self.path} or choose another run.out"
            )
        try:
            self.checkpoints.mkdir(exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"cannot create {self.checkpoints}: {error.strerror or error}") from None

    def write_json(self, path: Path, values: dict[str, Any]) -> None:
        self.replace_file(path, json.dumps(values, indent=2) + "\n")

    @staticmethod
    def replace_file(path: Path, text: str) -> None:
        """Replace ``path`` with ``text``, whole or not at all; a failure is one line naming the file."""
        try:
            write_text_atomically(path, text)
        except WriteFailed as error:
            raise RunFolderError(str(error)) from None

    def read_config(self) -> tuple[TrainConfig, dict[str, Any]]:
        """The run's configuration (checked) and the whole ``config.json`` object."""
        if not self.config.is_file():
            raise RunFolderError(f"{self.path} is not a run folder (no config.json)")
        try:
            values = json.loads(self.config.read_text())
            config = resolve_config(TrainConfig.from_dict(values))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, RecursionError) as error:
            raise RunFolderError(f"{self.config}: not a valid run configuration ({error})") from None
        return config, values

    def is_locked(self) -> bool:
        """Whether a live process holds this folder now (reads only: creates and writes nothing).

        A ``run.lock`` that is not a regular file (a FIFO would block an open) is no lock.
        """
        try:
            descriptor = open_regular_file(self.path / "run.lock", os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(descriptor)
        return False

    def append(self, path: Path, record: dict[str, Any]) -> None:
        """Append one JSON line to ``path`` (``metrics`` or ``gradients``) and flush it to disk."""
        try:
            write_text_safely(path, json.dumps(record) + "\n", append=True)
        except OSError as error:
            raise RunFolderError(f"cannot write {path}: {error.strerror or error}") from None
        if path == self.metrics:
            self.write_metrics_table(self.read_metrics())

    def write_metrics_table(self, records: list[dict[str, Any]]) -> None:
        """``metrics.csv``: ``METRIC_KEYS`` as columns, one row per record (replaced whole, never torn)."""
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=METRIC_KEYS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        self.replace_file(self.metrics_table, table.getvalue())

    def read_records(self, path: Path) -> list[dict[str, Any]]:
        """Every line of a JSON-lines file; a torn last line (a crash mid-write) is left out.

        A damaged line followed by valid ones is not a torn write: it is refused, naming the
        file and the line, rather than silently dropping what follows it.
        """
        if not path.is_file():
            return []
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise RunFolderError(f"{path}: unreadable ({error})") from None
        records = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                record = None
            if not isinstance(record, dict):
                if number == len(lines):
                    break
                raise RunFolderError(f"{path}: line {number} is damaged, and lines after it would be lost")
            records.append(record)
        return records

    def read_metrics(self) -> list[dict[str, Any]]:
        return self.read_records(self.metrics)

    def keep_records(self, evaluations: int, iteration: int) -> None:
        """Keep what the checkpoint being resumed from knows: its evaluations, and gradients up to its iteration."""
        metrics = self.read_records(self.metrics)[:evaluations]
        check_metric_records(self.metrics, metrics)
        kept = {
            self.metrics: metrics,
            self.gradients: [
                record
                for record in self.read_records(self.gradients)
                if isinstance(record.get("iteration"), int) and record["iteration"] <= iteration
            ],
        }
        for path, records in kept.items():
            if path.is_file():
                self.replace_file(path, "".join(json.dumps(record) + "\n" for record in records))
        if self.metrics.is_file():
            self.write_metrics_table(kept[self.metrics])


class RunLock:
    """An exclusive ``flock`` on ``run.lock``: one training process per run folder.

    The kernel releases the lock when the holding process ends, however it ends (SIGKILL
    included), so a crashed run never leaves its folder stuck. The file keeps the holder's
    process id for the error message; it is never opened through a symbolic link. A holder
    that fails (a refused resume, a stopped run) puts back what the file held before, so a
    refused command leaves the folder as it found it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.descriptor: int | None = None
        self.previous_holder = b""

    def __enter__(self) -> RunLock:
        try:
            descriptor = open_regular_file(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as error:
            raise RunFolderError(f"cannot lock {self.path}: {error.strerror or error}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode(errors="replace").strip() or "another process"
            os.close(descriptor)
            raise RunFolderBusy(
                f"{self.path.parent} is in use by process {holder}; wait for it to finish or choose another run.out"
            ) from None
        try:
            self.previous_holder = os.pread(descriptor, 32, 0)
            self._hold_as(descriptor, str(os.getpid()).encode())
        except OSError as error:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)
            raise RunFolderError(f"cannot write {self.path}: {error.strerror or error}") from None
        self.descriptor = descriptor
        return self

    @staticmethod
    def _hold_as(descriptor: int, holder: bytes) -> None:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, holder, 0)

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if self.descriptor is not None:
            if exc_type is not None:
                with contextlib.suppress(OSError):
                    self._hold_as(self.descriptor, self.previous_holder)
            fcntl.flock(self.descriptor, fcntl.LOCK_UN)
            os.close(self.descriptor)
            self.descriptor = None
