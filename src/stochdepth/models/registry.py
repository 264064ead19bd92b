"""The model registry: ``@register_model`` builders, ``create_model`` and ``list_models``."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

ModelBuilder = Callable[..., nn.Module]

_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(builder: ModelBuilder) -> ModelBuilder:
    """Register ``builder`` under its function name; a name can be registered once."""
    name = builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is already registered")
    _BUILDERS[name] = builder
    return builder


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_BUILDERS)


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build the registered model ``name``.

    Keyword arguments that are ``None`` are left out, so the family's own defaults stay in
    force (``survival_rule="linear"``, ``final_survival_prob=0.5``, ``drop_mode="batch"``
    for residual families). Common arguments: ``num_classes``, ``in_channels``,
    ``survival_rule``, ``final_survival_prob``, ``drop_mode``, ``gate_seed``.
    """
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, _BUILDERS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; known models: {', '.join(list_models())}")
    options = {key: value for key, value in kwargs.items() if value is not None}
    try:
        return _BUILDERS[name](**options)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        raise ValueError(f"model {name!r} does not take {str(error).rsplit(' ', 1)[-1]}") from None
