"""The learning rate at every epoch of every recipe, and the scheduler object that applies it."""

import pytest
import torch

from stochdepth.train.recipes import list_presets, preset
from stochdepth.train.schedule import EpochSchedule, learning_rate


def _plan(name: str) -> list[float]:
    optim = preset(name).optim
    return [learning_rate(epoch, optim) for epoch in range(optim.epochs)]


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
"""Each paper recipe's learning rate, as (epochs, lr) pieces written out from the papers."""


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


def test_scheduler_sets_the_optimizer_lr_each_epoch_and_replans_on_extension():
    optim = preset("cifar10-resnet110").optim
    optim.epochs = 8
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=optim.lr)
    schedule = EpochSchedule(optimizer, optim)
    seen = []
    for _ in range(optim.epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)
    state = schedule.state_dict()
    assert state == {"last_epoch": 8}
    optim.epochs = 20
    extended = EpochSchedule(torch.optim.SGD([parameter], lr=optim.lr), optim)
    extended.load_state_dict(state)
    assert extended.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
