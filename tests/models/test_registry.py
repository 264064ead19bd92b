"""The registry: names, defaults and errors."""

import pytest
import torch

import stochdepth
from stochdepth.models import register_model


def test_list_models_names_the_cifar_resnets():
    names = stochdepth.list_models()
    assert names == sorted(names)
    for depth in (8, 20, 32, 44, 56, 110, 152, 1202):
        assert f"resnet{depth}" in names
    zoo = {
        "preact_resnet164",
        "preact_resnet1001",
        "wrn_16_8",
        "wrn_28_10",
        "wrn_40_4",
        "imagenet_resnet50",
        "imagenet_resnet101",
        "imagenet_resnet152",
        "densenet_bc_100_12",
        "densenet_bc_250_24",
        "densenet_bc_190_40",
    }
    assert zoo <= set(names)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="resnet110") as error:
        stochdepth.create_model("resnet111")
    assert "known models" in str(error.value)


def test_arguments_left_as_none_take_the_family_defaults():
    model = stochdepth.create_model("resnet8", survival_rule=None, final_survival_prob=None, drop_mode=None)
    assert stochdepth.survival_probs(model)[-1] == pytest.approx(0.5)
    assert model.gate_generator.drop_mode == "batch"
    assert model.depth_options == {
        "survival_rule": "linear",
        "final_survival_prob": 0.5,
        "drop_mode": "batch",
        "scaling": "paper",
        "time_schedule": "constant",
        "time_schedule_fraction": 0.5,
    }
    assert stochdepth.create_model("torchvision/resnet18", survival_rule=None).depth_options["scaling"] == "inverted"


def test_a_name_can_be_registered_once():
    with pytest.raises(ValueError, match="already registered"):

        @register_model(family="CIFAR ResNet", depth=20, parameters=269_722)
        def resnet20():
            raise AssertionError


def test_an_option_the_family_does_not_take_is_a_value_error():
    with pytest.raises(ValueError, match="'resnet8' does not take 'dropout_rate'"):
        stochdepth.create_model("resnet8", dropout_rate=0.3)


def test_resolution_fills_the_defaults_and_densenet_is_always_constant_depth():
    from stochdepth.config import TrainConfig
    from stochdepth.models import resolve_model_depth_options
    from stochdepth.train.setup import resolve_config

    assert resolve_model_depth_options("densenet_bc_100_12").survival_rule == "none"
    assert resolve_model_depth_options("resnet8", "none", 0.3).final_survival_prob == 1.0
    resolved = resolve_config(TrainConfig().override(model="densenet_bc_100_12"))
    assert (resolved.model.survival_rule, resolved.model.final_survival_prob) == ("none", 1.0)
    with pytest.raises(ValueError, match="does not apply to densenet_bc_100_12"):
        resolve_config(TrainConfig().override(model="densenet_bc_100_12", survival_rule="linear"))


def test_a_run_resolves_its_depth_options_once_and_passes_them_on(monkeypatch, tiny_config):
    """resolve_config resolves; building the network (registry, mechanism, schedule) uses what it was given."""
    from stochdepth.depth import apply, schedule
    from stochdepth.models import registry
    from stochdepth.train import train

    calls = []
    real = schedule.resolve_depth_options

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    for module in (schedule, apply, registry):
        monkeypatch.setattr(module, "resolve_depth_options", counting)
    config = tiny_config.override(train_size=64, epochs=1, final_survival_prob=0.7)
    train(config, progress=False)
    assert len(calls) == 1, calls
    with pytest.raises(ValueError, match="either depth_options or"):
        stochdepth.create_model(
            "resnet8", final_survival_prob=0.5, depth_options=registry.resolve_model_depth_options("resnet8")
        )


@pytest.mark.parametrize("image_size", [0, "32", True, 2.5])
def test_a_bad_image_size_is_refused_before_anything_is_built(image_size):
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        stochdepth.create_model("torchvision/resnet18", image_size=image_size)


def test_a_network_of_another_library_whose_blocks_are_not_recognised_is_refused_before_it_is_built(monkeypatch):
    """Checked on the meta device first: no memory, no initialisation (a giant network would take minutes)."""
    from stochdepth.models import registry

    devices = []
    real = registry._external_builder

    def recording(name):
        builder = real(name)

        def build(**options):
            devices.append(torch.get_default_device().type)
            return builder(**options)

        return build

    monkeypatch.setattr(registry, "_external_builder", recording)
    with pytest.raises(ValueError, match="no residual block found"):
        stochdepth.create_model("torchvision/alexnet", num_classes=10)
    assert devices == ["meta"]
    devices.clear()
    stochdepth.create_model("torchvision/resnet18", num_classes=10)
    assert devices == ["meta", "cpu"]
