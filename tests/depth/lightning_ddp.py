"""A user's Lightning module around a converted torchvision ResNet, trained with ``strategy="ddp"`` on 2 CPU ranks.

Run as a script (Lightning's DDP launcher starts the other rank by running it again):
``python tests/depth/lightning_ddp.py OUT DROP_MODE``; each rank saves what it saw after every
step, and the BatchNorm statistics its validations ran with (``StochasticDepthCallback`` with
recalibration batches, the same on both ranks), to ``OUT/rank<N>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import resnet as tv

import stochdepth
from stochdepth.lightning import StochasticDepthCallback


class Classifier(lightning.LightningModule):
    def __init__(self, drop_mode: str) -> None:
        super().__init__()
        network = tv.ResNet(tv.BasicBlock, [1, 1, 1, 1], num_classes=4)
        self.net = stochdepth.stochastic_depth(
            network, survival_rule="uniform", final_survival_prob=0.5, drop_mode=drop_mode
        )
        self.steps: list[dict[str, object]] = []
        self.validation_statistics: list[dict[str, torch.Tensor]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> None:
        if index == 0:
            statistics = {name: value.clone() for name, value in self.net.named_buffers() if "running" in name}
            self.validation_statistics.append(statistics)
        images, labels = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(images), labels), sync_dist=True)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        images, labels = batch
        return nn.functional.cross_entropy(self.net(images), labels)

    def on_train_batch_end(self, outputs: object, batch: object, index: int) -> None:
        step = stochdepth.gate_generator(self.net).step
        self.steps.append(
            {
                "runs_anywhere": list(step.runs_anywhere),
                "conv1": [
                    block.conv1.weight.detach().clone() for block in stochdepth.depth.stochastic_blocks(self.net)
                ],
            }
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1)


def main(out: Path, drop_mode: str) -> None:
    lightning.seed_everything(0)
    data = TensorDataset(torch.randn(48, 3, 48, 48), torch.randint(0, 4, (48,)))
    validation = TensorDataset(torch.randn(8, 3, 48, 48), torch.randint(0, 4, (8,)))
    recalibration = [torch.randn(8, 3, 48, 48, generator=torch.Generator().manual_seed(index)) for index in range(2)]
    module = Classifier(drop_mode)
    before = [block.conv1.weight.detach().clone() for block in stochdepth.depth.stochastic_blocks(module.net)]
    trainer = lightning.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StochasticDepthCallback(log_depth=False, recalibration_batches=recalibration)],
    )
    trainer.fit(module, DataLoader(data, batch_size=4), DataLoader(validation, batch_size=4))
    trained = {name: value.clone() for name, value in module.net.named_buffers() if "running" in name}
    results = {
        "before": before,
        "steps": module.steps,
        "validation_statistics": module.validation_statistics,
        "trained_statistics": trained,
    }
    torch.save(results, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
