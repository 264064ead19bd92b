"""The run folder: the files that the report, the sweeps and users' own scripts read.

``config.json``     the resolved configuration, the library and torch versions, the device,
                    every block's survival probability and the data spec (classes, channels,
                    size, normalisation mean and std)
``metrics.jsonl``   one JSON object per evaluation (errors are fractions)
``gradients.jsonl`` (with ``--record-gradients-every``) one object per recording step
``summary.json``    best_epoch, best_val_error, test_error_at_best_val, final_test_error, train_seconds
``checkpoints/last.pt`` and ``checkpoints/best.pt`` (best by validation error, never by test)
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from stochdepth.config import TrainConfig
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


class RunFolder:
    """Paths and reads/writes of one run folder."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.summary = self.path / "summary.json"
        self.gradients = self.path / "gradients.jsonl"
        self.checkpoints = self.path / "checkpoints"

    def checkpoint(self, which: str) -> Path:
        """``checkpoints/last.pt`` or ``checkpoints/best.pt``."""
        if which not in ("last", "best"):
            raise ValueError(f"checkpoint must be 'last' or 'best', got {which!r}")
        return self.checkpoints / f"{which}.pt"

    def create(self) -> None:
        """Make the folder for a new run; refuse a non-empty one (resume it instead)."""
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise RunFolderError(f"{self.path} exists and is not empty; use --resume {self.path} or another --out")
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"cannot create run folder {self.path}: {error.strerror or error}") from None

    def write_json(self, path: Path, values: dict[str, Any]) -> None:
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            temporary.write_text(json.dumps(values, indent=2) + "\n")
            os.replace(temporary, path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise RunFolderError(f"cannot write {path}: {error.strerror or error}") from None

    def read_config(self) -> tuple[TrainConfig, dict[str, Any]]:
        """The run's configuration (checked) and the whole ``config.json`` object."""
        if not self.config.is_file():
            raise RunFolderError(f"{self.path} is not a run folder (no config.json)")
        try:
            values = json.loads(self.config.read_text())
            config = resolve_config(TrainConfig.from_dict(values))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as error:
            raise RunFolderError(f"{self.config}: not a valid run configuration ({error})") from None
        return config, values

    def lock(self) -> RunLock:
        """Hold the folder for this process (:class:`RunLock`)."""
        return RunLock(self.path / "run.lock")

    def is_locked(self) -> bool:
        """Whether a live process is training into this folder now."""
        try:
            with RunLock(self.path / "run.lock"):
                return False
        except RunFolderError:
            return True

    def append(self, path: Path, record: dict[str, Any]) -> None:
        """Append one JSON line to ``path`` (``metrics`` or ``gradients``) and flush it to disk."""
        try:
            with open(path, "a") as file:
                file.write(json.dumps(record) + "\n")
                file.flush()
                os.fsync(file.fileno())
        except OSError as error:
            raise RunFolderError(f"cannot write {path}: {error.strerror or error}") from None

    def read_records(self, path: Path) -> list[dict[str, Any]]:
        """Every complete line of a JSON-lines file (a torn last line, from a crash mid-write, is left out)."""
        if not path.is_file():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    def read_metrics(self) -> list[dict[str, Any]]:
        return self.read_records(self.metrics)

    def keep_records(self, evaluations: int, iteration: int) -> None:
        """Keep what the checkpoint being resumed from knows: its evaluations, and gradients up to its iteration."""
        kept = {
            self.metrics: self.read_records(self.metrics)[:evaluations],
            self.gradients: [
                record for record in self.read_records(self.gradients) if record["iteration"] <= iteration
            ],
        }
        for path, records in kept.items():
            if path.is_file():
                temporary = path.with_name(f".{path.name}.tmp")
                temporary.write_text("".join(json.dumps(record) + "\n" for record in records))
                os.replace(temporary, path)


class RunLock:
    """An exclusive ``flock`` on ``run.lock``: one training process per run folder.

    The kernel releases the lock when the holding process ends, however it ends (SIGKILL
    included), so a crashed run never leaves its folder stuck. The file keeps the holder's
    process id for the error message.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.descriptor: int | None = None

    def __enter__(self) -> RunLock:
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode(errors="replace").strip() or "another process"
            os.close(descriptor)
            raise RunFolderError(
                f"{self.path.parent} is in use by process {holder}; wait for it to finish or use another --out"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, str(os.getpid()).encode())
        self.descriptor = descriptor
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.descriptor is not None:
            fcntl.flock(self.descriptor, fcntl.LOCK_UN)
            os.close(self.descriptor)
            self.descriptor = None
