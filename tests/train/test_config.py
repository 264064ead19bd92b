"""Configuration: round trips, overrides, and refusal of nonsense."""

import pytest

from stochdepth.config import TrainConfig
from stochdepth.train.recipes import preset


def test_round_trip_through_a_dict():
    config = preset("cifar10-resnet1202").override(epochs=3, seed=7, lr_milestones=(0.2,))
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert (config.optim.epochs, config.run.seed, config.optim.warmup_epochs) == (3, 7, 10)


def test_override_ignores_none_and_refuses_unknown_names():
    config = TrainConfig().override(model="resnet20", survival_rule=None)
    assert (config.model.model, config.model.survival_rule) == ("resnet20", None)
    with pytest.raises(ValueError, match="unknown option 'learning_rate'"):
        TrainConfig().override(learning_rate=0.1)


@pytest.mark.parametrize(
    "values",
    [[1, 2], {"optim": {"epochs": 3, "lr_schedule": "cosine"}}, {"model": "resnet20"}],
)
def test_from_dict_refuses_what_it_does_not_know(values):
    with pytest.raises(ValueError):
        TrainConfig.from_dict(values)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="cifar10-resnet110"):
        preset("cifar10-resnet111")
