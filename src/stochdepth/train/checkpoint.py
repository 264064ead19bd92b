"""Checkpoints: written atomically, read safely, versioned.

A checkpoint is a dict of tensors and plain values only, so it loads with
``torch.load(weights_only=True)``: a pickle payload hidden in a file cannot run code. It
is written whole or not at all (:func:`stochdepth.files.write_atomically`), so a crash
or a full disk never leaves a half-written checkpoint behind; the previous one stays intact
until the new one is complete. Every checkpoint carries a digest of its content (every
tensor's bytes, every plain value), checked on load: a flipped bit anywhere (a weight, a
momentum buffer) is refused, not silently used.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from stochdepth.files import WriteFailed, write_atomically

FORMAT_VERSION = 2
"""Format 2 draws a whole step's gates in one call (another gate sequence for the same seed than
format 1's draw per block) and carries the run's resolved configuration and data spec, so a
checkpoint alone rebuilds its network. A format-1 checkpoint resumes, with gates drawn the
format-2 way from then on: the run continues correctly but not bit-identically to one that was
never interrupted."""
KNOWN_FORMAT_VERSIONS = (1, 2)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def content_digest(value: Any) -> str:
    """A BLAKE2 digest of ``value``: dicts (by sorted key), lists, tensors (dtype, shape, bytes), plain values."""
    digest = hashlib.blake2b(digest_size=32)

    def feed(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            flat = item.detach().cpu().contiguous().reshape(-1)
            digest.update(f"tensor:{item.dtype}:{tuple(item.shape)}:".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        elif isinstance(item, dict):
            digest.update(f"dict:{len(item)}:".encode())
            for key in sorted(item, key=repr):
                feed(key)
                feed(item[key])
        elif isinstance(item, (list, tuple)):
            digest.update(f"{type(item).__name__}:{len(item)}:".encode())
            for element in item:
                feed(element)
        else:
            digest.update(f"{type(item).__name__}:{item!r};".encode())

    feed(value)
    return digest.hexdigest()


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` (plus the format version) to ``path`` atomically; returns the path."""
    path = Path(path)
    content = {"format_version": FORMAT_VERSION, **state}
    try:
        write_atomically(path, lambda file: torch.save({**content, "checksum": content_digest(content)}, file))
    except WriteFailed as error:
        kept = "the previous checkpoint is intact" if path.is_file() else "no earlier checkpoint exists"
        raise CheckpointError(f"{error}; {kept}") from None
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; raise :class:`CheckpointError` for anything unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own warnings about a refused file: the error says it in one line
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused, not a checkpoint of plain tensors and numbers (loading it could run code)"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{path}: not a checkpoint, or a truncated or corrupted one ({type(error).__name__})"
        ) from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path}: not a stochdepth checkpoint")
    if state["format_version"] not in KNOWN_FORMAT_VERSIONS:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format_version']} is not known to this version of stochdepth "
            f"(it reads {', '.join(map(str, KNOWN_FORMAT_VERSIONS))}); upgrade stochdepth"
        )
    if state["format_version"] >= 2:
        content = {key: value for key, value in state.items() if key != "checksum"}
        if state.get("checksum") != content_digest(content):
            raise CheckpointError(f"{path}: content does not match its checksum (damaged on disk or edited)")
    return state
