"""Writing a file whole or not at all: the one place every file of a run folder or an export is written.

A file is written to a temporary file beside it (never through a symbolic link), flushed to
disk, renamed over the target and the folder flushed too, so a reader sees the old file or
the new one, never a torn one, whatever kills the writer. A failure removes the temporary
file and becomes :class:`WriteFailed`, one line naming the file: an ``OSError`` says its
reason; any other error (``torch.save`` reports a full disk as a ``RuntimeError`` from its
zip writer, without saying so) is called a full disk only when the disk is full, checked
before the temporary file is removed, and is re-raised otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

FULL_DISK_BYTES = 1 << 20
"""Free space below which a failed write is put down to a full disk."""


class WriteFailed(OSError):
    """A file could not be written; the message names it and says why. Nothing partial is left."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return self.args[0]


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < FULL_DISK_BYTES
    except OSError:
        return False


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Replace ``path`` with what ``write(file)`` writes into a fresh binary file; returns the path."""

    def into(temporary: Path) -> None:
        with open(temporary, "wb", opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW, 0o644)) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())

    return write_path_atomically(path, into)


def write_path_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Replace ``path`` with the file ``write(temporary)`` creates at the temporary path it is given.

    For writers that take a file name only (the ONNX exporter); :func:`write_atomically` is
    this with a file object. The written file is flushed to disk before the rename.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if temporary.is_symlink():
            temporary.unlink()
        write(temporary)
        descriptor = os.open(temporary, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except BaseException as error:
        full = not isinstance(error, OSError) and isinstance(error, Exception) and _disk_full(path.parent)
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise WriteFailed(path, error.strerror or str(error)) from None
        if full:
            raise WriteFailed(path, "no space left on device") from None
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_atomically` for UTF-8 text."""
    return write_atomically(path, lambda file: file.write(text.encode()))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (``.<name>.<pid>.tmp``) that killed writers left in ``folder``; returns them.

    A writer killed by a signal that Python cannot catch (SIGKILL, or SIGTERM with its default
    action) leaves its temporary file; one whose process is still alive is left alone.
    """
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        pid = path.name.rsplit(".", 2)[-2]
        if not pid.isdigit() or not path.is_file() or path.is_symlink() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
