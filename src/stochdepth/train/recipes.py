"""The paper's training recipes as named presets.

Each preset is stochastic (linear decay to p_L = 0.5 unless noted); its constant-depth
twin is the same preset with ``survival_rule="none"`` (``--survival-rule none``). Every
value can be overridden from the command line.

==================== ============== ======== ================================================
preset               model          epochs   schedule
==================== ============== ======== ================================================
cifar10-resnet110    resnet110      500      lr 0.1, /10 at 250 and 375; wd 1e-4; batch 128
cifar100-resnet110   resnet110      500      as above
cifar10-resnet1202   resnet1202     300      lr 0.01 for 10 epochs, then 0.1, /10 at 150, 225
svhn-resnet152       resnet152      50       lr 0.1, /10 at 30 and 35; validate every 200 iters
imagenet-resnet152   imagenet_...   120      lr 0.1, /10 every 30 epochs; wd 1e-4; batch 128
cifar10-wrn-28-10    wrn_28_10      200      lr 0.1, x0.2 at 60, 120, 160; wd 5e-4; dropout 0.3
cifar100-wrn-28-10   wrn_28_10      200      as above
fashion-mnist-...    resnet110      500      the CIFAR recipe on Fashion-MNIST (offline data)
==================== ============== ======== ================================================
"""

from __future__ import annotations

import copy

from stochdepth.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig


def _paper(model: str, dataset: str, **optim: object) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(model=model, survival_rule="linear", final_survival_prob=0.5),
        data=DataConfig(dataset=dataset),
        optim=OptimConfig(**optim),
    )


def _wide(dataset: str) -> TrainConfig:
    config = _paper("wrn_28_10", dataset, epochs=200, weight_decay=5e-4, lr_milestones=(0.3, 0.6, 0.8), lr_decay=0.2)
    config.model.dropout_rate = 0.3
    return config


def _svhn() -> TrainConfig:
    config = _paper("resnet152", "svhn", epochs=50, lr_milestones=(0.6, 0.7))
    config.run = RunConfig(eval_every_iters=200)
    return config


PRESETS: dict[str, TrainConfig] = {
    "cifar10-resnet110": _paper("resnet110", "cifar10", epochs=500),
    "cifar100-resnet110": _paper("resnet110", "cifar100", epochs=500),
    "cifar10-resnet1202": _paper("resnet1202", "cifar10", epochs=300, warmup_epochs=10, warmup_lr=0.01),
    "svhn-resnet152": _svhn(),
    "imagenet-resnet152": _paper(
        "imagenet_resnet152", "imagenet", epochs=120, lr_milestones=(0.25, 0.5, 0.75), batch_size=128
    ),
    "cifar10-wrn-28-10": _wide("cifar10"),
    "cifar100-wrn-28-10": _wide("cifar100"),
    "fashion-mnist-resnet110": _paper("resnet110", "fashion-mnist", epochs=500),
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def describe_preset(name: str) -> str:
    """One line of the preset's recipe: model, data, depth schedule, epochs and learning-rate plan."""
    config = PRESETS[name]
    optim = config.optim
    drops = ", ".join(f"{round(fraction * optim.epochs)}" for fraction in optim.lr_milestones)
    warmup = f"{optim.warmup_lr:g} for {optim.warmup_epochs} epochs, then " if optim.warmup_epochs else ""
    return (
        f"{config.model.model} on {config.data.dataset}, {config.model.survival_rule} to p_L = "
        f"{config.model.final_survival_prob:g}, {optim.epochs} epochs, lr {warmup}{optim.lr:g} x{optim.lr_decay:g} "
        f"at {drops}, batch {optim.batch_size}, weight decay {optim.weight_decay:g}"
    )


def preset(name: str) -> TrainConfig:
    """A fresh copy of the preset ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}")
    return copy.deepcopy(PRESETS[name])
