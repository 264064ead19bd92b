"""Where torchrun placed this process: its rank, local rank and the world size, from the environment.

Kept free of PyTorch so that the command line can read it (to name the rank in an error)
before importing anything heavy.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class Place(NamedTuple):
    rank: int
    local_rank: int
    world_size: int


def torchrun_place() -> Place:
    """``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` as torchrun sets them; rank 0 of 1 outside torchrun.

    ``ValueError`` naming the variables if they are not whole numbers with the rank inside the world.
    """
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
    given = {name: os.environ.get(name) for name in names}
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": given["RANK"] or "0"}
    text = {name: given[name] if given[name] is not None else defaults[name] for name in names}
    shown = ", ".join(f"{name}={value!r}" for name, value in text.items())
    if not all(_whole_number(value) for value in text.values()):
        raise ValueError(f"torchrun's environment must hold whole numbers, got {shown}")
    place = Place(*(int(text[name]) for name in names))
    if place.world_size < 1 or place.rank >= place.world_size:
        raise ValueError(f"torchrun's environment must give a RANK below WORLD_SIZE, got {shown}")
    port = os.environ.get("MASTER_PORT")
    if place.world_size > 1 and port is not None and not _whole_number(port):
        raise ValueError(f"torchrun's environment must give MASTER_PORT as a whole number, got MASTER_PORT={port!r}")
    return place


def _whole_number(text: str) -> bool:
    """Digits 0-9 only (``str.isdigit`` also accepts ``"²"``, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()
