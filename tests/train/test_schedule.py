"""The learning rate at every epoch of every recipe, and at every iteration of short runs."""

import pytest
import torch

from stochdepth.config import OptimConfig
from stochdepth.train.recipes import list_presets, preset
from stochdepth.train.schedule import learning_rate, milestone_iterations


def _plan(name: str) -> list[float]:
    optim = preset(name).optim
    steps = 7
    by_iteration = [learning_rate(iteration, optim, steps) for iteration in range(optim.epochs * steps)]
    per_epoch = by_iteration[::steps]
    assert all(by_iteration[epoch * steps : (epoch + 1) * steps] == [lr] * steps for epoch, lr in enumerate(per_epoch))
    return per_epoch


def _expected(*pieces: tuple[int, float]) -> list[float]:
    return [lr for count, lr in pieces for _ in range(count)]


PLANS = {
    "cifar10-resnet110": ((250, 0.1), (125, 0.01), (125, 0.001)),
    "cifar100-resnet110": ((250, 0.1), (125, 0.01), (125, 0.001)),
    "fashion-mnist-resnet110": ((250, 0.1), (125, 0.01), (125, 0.001)),
    "cifar10-resnet1202": ((10, 0.01), (140, 0.1), (75, 0.01), (75, 0.001)),
    "svhn-resnet152": ((30, 0.1), (5, 0.01), (15, 0.001)),
    "imagenet-resnet152": ((30, 0.1), (30, 0.01), (30, 0.001), (30, 0.0001)),
    "cifar10-wrn-28-10": ((60, 0.1), (60, 0.02), (40, 0.004), (40, 0.0008)),
    "cifar100-wrn-28-10": ((60, 0.1), (60, 0.02), (40, 0.004), (40, 0.0008)),
}
"""Each paper recipe's learning rate, as (epochs, lr) pieces written out from the papers' text (the Torch code
of Huang et al. drops one epoch earlier: README, "Where this library differs")."""


@pytest.mark.parametrize("name", list_presets())
def test_learning_rate_at_each_epoch_of_each_recipe(name):
    assert name in PLANS, f"preset {name} has no written-out plan here"
    assert _plan(name) == pytest.approx(_expected(*PLANS[name]), rel=1e-9)


def test_recipe_settings_from_the_papers():
    wide = preset("cifar10-wrn-28-10")
    assert (wide.optim.weight_decay, wide.model.dropout_rate) == (5e-4, 0.3)
    svhn = preset("svhn-resnet152")
    assert (svhn.model.model, svhn.run.eval_every_iters) == ("resnet152", 200)
    for name in list_presets():
        config = preset(name)
        assert (config.optim.momentum, config.optim.batch_size) == (0.9, 128)
        assert (config.model.survival_rule, config.model.final_survival_prob) == ("linear", 0.5)


def test_short_runs_drop_at_fractions_of_their_iterations():
    """1 epoch of 10 steps at milestones 0.5, 0.75: drops at iterations 5 and 8 (per epoch, it never dropped)."""
    optim = OptimConfig(epochs=1, lr=0.1, lr_milestones=(0.5, 0.75), lr_decay=0.1)
    assert milestone_iterations(optim, 10) == [5, 8]
    plan = [learning_rate(iteration, optim, 10) for iteration in range(10)]
    assert plan == pytest.approx([0.1] * 5 + [0.01] * 3 + [0.001] * 2)
    two_epochs = OptimConfig(epochs=2, lr=0.1, lr_milestones=(0.5, 0.75), lr_decay=0.1)
    assert learning_rate(19, two_epochs, 10) == pytest.approx(0.001), "a 2-epoch run reaches its second drop"


def test_warm_up_lasts_whole_epochs_and_a_longer_run_replans():
    optim = OptimConfig(epochs=4, lr=0.1, warmup_epochs=1, warmup_lr=0.01, lr_milestones=(0.5,), lr_decay=0.1)
    assert [learning_rate(iteration, optim, 3) for iteration in range(12)] == pytest.approx(
        [0.01] * 3 + [0.1] * 3 + [0.01] * 6
    )
    optim.epochs = 8
    assert learning_rate(6, optim, 3) == pytest.approx(0.1), "resumed with more epochs: the drop moves later"


def test_the_trainer_sets_the_planned_rate_at_each_step(tiny_config):
    from stochdepth.train import api

    config = tiny_config.override(train_size=128, epochs=1)
    seen = []
    original = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.SGD, "step", recording_step)
        api.train(config, out=None, progress=False)
    assert seen == pytest.approx([0.1, 0.1, 0.01, 0.001]), "4 steps: drops at iterations 2 and 3"
