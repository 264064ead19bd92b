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


class ValidatedClassifier(Classifier):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> None:
        images, labels = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(images), labels))


def _validated_fit(root: Path, recalibration_batches: object) -> tuple[lightning.Trainer, ValidatedClassifier]:
    generator = torch.Generator().manual_seed(1)
    train = TensorDataset(torch.randn(16, 1, 8, 8, generator=generator), torch.arange(16) % 10)
    val = TensorDataset(torch.randn(8, 1, 8, 8, generator=generator) + 0.5, torch.arange(8) % 10)
    module = ValidatedClassifier()
    checkpoints = lightning.pytorch.callbacks.ModelCheckpoint(dirpath=root, filename="latest")
    trainer = lightning.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[StochasticDepthCallback(recalibration_batches=recalibration_batches), checkpoints],
    )
    trainer.fit(module, DataLoader(train, batch_size=4), DataLoader(val, batch_size=8))
    return trainer, module


def test_the_callback_validates_with_recalibrated_batchnorm_and_leaves_training_and_checkpoints_as_without(tmp_path):
    import copy

    from torch.optim.swa_utils import update_bn

    recalibration = DataLoader(
        TensorDataset(torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 10),
        batch_size=8,
    )
    plain_trainer, plain = _validated_fit(tmp_path / "plain", None)
    trainer, module = _validated_fit(tmp_path / "recalibrated", recalibration)
    assert all(torch.equal(value, plain.state_dict()[name]) for name, value in module.state_dict().items())
    saved = [torch.load(tmp_path / run / "latest.ckpt", weights_only=True) for run in ("plain", "recalibrated")]
    assert [checkpoint["epoch"] for checkpoint in saved] == [1, 1], "the last epoch's"
    weights = [checkpoint["state_dict"] for checkpoint in saved]
    assert all(torch.equal(value, weights[1][name]) for name, value in weights[0].items()), "checkpoints as without"

    expected = copy.deepcopy(module.net)
    with stochdepth.run_every_block(expected):
        update_bn(recalibration, expected)
    val_images, val_labels = trainer.val_dataloaders.dataset.tensors
    with torch.no_grad():
        recalibrated_loss = nn.functional.cross_entropy(expected.eval()(val_images), val_labels)
        as_trained_loss = nn.functional.cross_entropy(plain.net.eval()(val_images), val_labels)
    logged = float(trainer.callback_metrics["val_loss"])
    assert logged == pytest.approx(float(recalibrated_loss), rel=1e-5)
    assert float(plain_trainer.callback_metrics["val_loss"]) == pytest.approx(float(as_trained_loss), rel=1e-5)
    assert logged != pytest.approx(float(as_trained_loss), rel=1e-3), "the statistics made a difference"


def test_recalibration_batches_of_another_kind_stop_validation_with_an_error_naming_what_came(tmp_path):
    dictionaries = [{"images": torch.randn(8, 1, 8, 8)}]
    with pytest.raises(TypeError, match="recalibration_batches must yield image tensors.*got dict"):
        _validated_fit(tmp_path, dictionaries)
