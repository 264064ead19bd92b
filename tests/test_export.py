"""fold_survival: equivalence with eval mode, no stochastic parts, export."""

import importlib.util

import pytest
import torch
from torch import nn

import stochdepth
from stochdepth.depth import StochasticResidual
from stochdepth.export import export_model
from tests.helpers import randomise_batchnorm


def _trained_looking(name: str, **kwargs) -> nn.Module:
    """A model whose BatchNorm statistics and affine parameters are not at their initial values."""
    return randomise_batchnorm(stochdepth.create_model(name, **kwargs)).eval()


@pytest.mark.parametrize("rule", ["linear", "uniform", "none"])
def test_folded_network_equals_eval_mode(rule):
    model = _trained_looking("resnet20", survival_rule=rule, final_survival_prob=0.3)
    folded = stochdepth.fold_survival(model)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected, output = model(x), folded(x)
    assert ((output - expected).norm() / expected.norm()).item() < 1e-5
    assert not any(isinstance(module, StochasticResidual) for module in folded.modules())
    assert not hasattr(folded, "gate_generator")
    assert not folded.training
    assert any(isinstance(module, StochasticResidual) for module in model.modules())


def test_fold_does_not_change_the_input_model():
    model = _trained_looking("resnet8")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    stochdepth.fold_survival(model)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_folded_network_exports_with_torch_export(tmp_path):
    folded = stochdepth.fold_survival(_trained_looking("resnet8"))
    example, other = torch.randn(2, 3, 32, 32), torch.randn(5, 3, 32, 32)
    path = export_model(folded, example, tmp_path / "model.pt2", "exported")
    program = torch.export.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(other), folded(other))


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="the onnx extra is not installed")
def test_onnxruntime_output_matches_pytorch(tmp_path):
    import onnxruntime

    folded = stochdepth.fold_survival(_trained_looking("resnet8", in_channels=1))
    path = export_model(folded, torch.randn(2, 1, 28, 28), tmp_path / "model.onnx", "onnx")
    x = torch.randn(3, 1, 28, 28)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), folded(x), rtol=1e-4, atol=1e-5)


def test_unknown_export_format_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="safetensors, torchscript, exported, onnx"):
        export_model(stochdepth.create_model("resnet8").eval(), torch.randn(1, 3, 8, 8), tmp_path / "m", "pickle")
