"""Seeded train/validation splits (the paper holds validation images out of the training set)."""

from __future__ import annotations

import torch


def holdout_split(num_items: int, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, validation): a seeded permutation's first ``holdout`` items are validation.

    Both index tensors keep the permutation's order, so "the first N training images" is
    a random, roughly class-balanced subset.
    """
    if not 0 <= holdout <= num_items:
        raise ValueError(f"cannot hold out {holdout} of {num_items} items")
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    return order[holdout:], order[:holdout]


def per_class_holdout(labels: torch.Tensor, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, validation) with ``per_class`` validation items of every class.

    The training indices are the rest, in a seeded random order.
    """
    generator = torch.Generator().manual_seed(seed)
    held_out = []
    for label in labels.unique().tolist():
        members = torch.nonzero(labels == label).flatten()
        if len(members) < per_class:
            raise ValueError(f"class {label} has {len(members)} items, fewer than the {per_class} to hold out")
        held_out.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    validation = torch.cat(held_out)
    is_train = torch.ones(len(labels), dtype=torch.bool)
    is_train[validation] = False
    train = torch.nonzero(is_train).flatten()
    return train[torch.randperm(len(train), generator=generator)], validation
