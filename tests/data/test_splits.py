"""The paper's splits: sizes, disjointness, seeding."""

import torch

from stochdepth.data.splits import holdout_split, per_class_holdout


def test_holdout_split_is_a_seeded_partition():
    train, val = holdout_split(50_000, 5_000, seed=0)
    assert (len(train), len(val)) == (45_000, 5_000)
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(50_000))
    again_train, again_val = holdout_split(50_000, 5_000, seed=0)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert not torch.equal(val, holdout_split(50_000, 5_000, seed=1)[1])


def test_per_class_holdout_takes_exactly_k_of_each_class():
    labels = torch.arange(3000) % 10
    train, val = per_class_holdout(labels, 40, seed=3)
    assert torch.bincount(labels[val]).tolist() == [40] * 10
    assert len(train) == 2600
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.equal(val, per_class_holdout(labels, 40, seed=3)[1])
