"""The Lightning callback: a resumed run ends with the weights of an uninterrupted one, and the depth is logged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import stochdepth

lightning = pytest.importorskip("lightning")

from stochdepth.lightning import StochasticDepthCallback  # noqa: E402


class Classifier(lightning.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = stochdepth.create_model(
            "resnet8", in_channels=1, final_survival_prob=0.3, time_schedule="ramp", total_steps=8, gate_seed=3
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        images, labels = batch
        return nn.functional.cross_entropy(self.net(images), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)


def _fit(epochs: int, root: Path, callbacks: list, resume_from: Path | None = None) -> lightning.Trainer:
    data = TensorDataset(torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 10)
    module = Classifier()
    trainer = lightning.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=callbacks,
    )
    trainer.fit(module, DataLoader(data, batch_size=4), ckpt_path=resume_from)
    return trainer


def _weights(trainer: lightning.Trainer) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in trainer.lightning_module.state_dict().items()}


@pytest.mark.parametrize("with_callback", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_a_resumed_lightning_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, with_callback):
    callbacks = (lambda: [StochasticDepthCallback()]) if with_callback else list
    straight = _weights(_fit(2, tmp_path / "straight", callbacks()))
    first = _fit(1, tmp_path / "first", callbacks())
    first.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed = _fit(2, tmp_path / "resumed", callbacks(), resume_from=tmp_path / "epoch1.ckpt")
    same = all(torch.equal(value, _weights(resumed)[name]) for name, value in straight.items())
    assert same == with_callback, "without the callback the gates start over and the weights differ"
    if with_callback:
        gates = stochdepth.gate_generator(resumed.lightning_module)
        assert gates.steps_taken == 8, "the ramp over 8 steps continued where the checkpoint left it"
        metrics = resumed.callback_metrics
        assert 0 <= float(metrics["stochdepth/branches_run"]) <= 3
        assert float(metrics["stochdepth/branches_expected"]) == pytest.approx(sum(gates.probs_in_force))


def test_a_checkpoint_without_gate_state_is_refused_by_name(tmp_path):
    first = _fit(1, tmp_path / "first", [])
    first.save_checkpoint(tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="no stochdepth gate state"):
        _fit(2, tmp_path / "resumed", [StochasticDepthCallback()], resume_from=tmp_path / "plain.ckpt")
