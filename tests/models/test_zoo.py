"""Every registered model: shapes, gradients, sizes, compute savings, folding; family structure."""

import copy
import functools

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import stochdepth
from stochdepth.depth import ResidualBlock, stochastic_blocks
from stochdepth.models import densenet_bc, imagenet_resnet, preact_resnet, wide_resnet
from tests.helpers import randomise_batchnorm

ALL_MODELS = stochdepth.list_models()


@functools.cache
def _built(name: str, survival_rule: str | None) -> nn.Module:
    return stochdepth.create_model(name, num_classes=10, in_channels=3, survival_rule=survival_rule)


def _model(name: str, survival_rule: str | None = None) -> nn.Module:
    """A fresh copy of a model built once for the whole module (the big ones take a while to build)."""
    return copy.deepcopy(_built(name, survival_rule))


def _input(name: str, batch: int = 2) -> torch.Tensor:
    size = 32 if name.startswith("imagenet") else 8
    return torch.randn(batch, 3, size, size)


def _declared_blocks(model: nn.Module) -> list[ResidualBlock]:
    return [module for module in model.modules() if isinstance(module, ResidualBlock)]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_has_the_right_shape_and_no_nan(name):
    model = _model(name).train()
    with torch.no_grad():
        logits = model(_input(name))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backward_at_constant_depth_reaches_every_parameter(name):
    model = _model(name, "none").train()
    model(_input(name)).logsumexp(dim=1).sum().backward()
    missing = [param_name for param_name, param in model.named_parameters() if param.grad is None]
    assert not missing
    assert sum(param.numel() for param in model.parameters()) == stochdepth.models.model_info(name).parameters
    assert all(torch.isfinite(param.grad).all() for param in model.parameters())


@pytest.mark.parametrize(
    ("name", "millions"),
    [
        ("preact_resnet164", 1.7),
        ("preact_resnet1001", 10.33),
        ("wrn_16_8", 11.0),
        ("wrn_28_10", 36.5),
        ("wrn_40_4", 8.9),
        ("densenet_bc_100_12", 0.8),
        ("densenet_bc_250_24", 15.3),
        ("densenet_bc_190_40", 25.6),
    ],
)
def test_parameter_counts_match_the_papers(name, millions):
    assert sum(param.numel() for param in _model(name).parameters()) / 1e6 == pytest.approx(millions, rel=0.05)


def test_preact_resnet1001_has_the_parameter_count_its_docstring_states():
    count = sum(param.numel() for param in _model("preact_resnet1001").parameters())
    assert round(count / 1e6, 2) == 10.33


@pytest.mark.parametrize(
    ("name", "millions", "giga_multiply_adds"),
    [("imagenet_resnet50", 25.6, None), ("imagenet_resnet101", 44.5, None), ("imagenet_resnet152", 60.2, 11.5)],
)
def test_imagenet_resnets_match_he_et_al(name, millions, giga_multiply_adds):
    model = stochdepth.create_model(name).eval()
    assert sum(param.numel() for param in model.parameters()) / 1e6 == pytest.approx(millions, rel=0.05)
    if giga_multiply_adds is not None:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 3, 224, 224))
        assert counter.get_total_flops() / 2 / 1e9 == pytest.approx(giga_multiply_adds, rel=0.02)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_fold_survival_equals_eval_mode(name):
    """In float64, so float32 rounding over hundreds of blocks cannot hide (or fake) a wrong fold."""
    model = randomise_batchnorm(_model(name)).double().eval()
    x = _input(name, batch=3).double()
    folded = stochdepth.fold_survival(model)
    with torch.no_grad():
        expected, output = model(x), folded(x)
    assert ((output - expected).norm() / expected.norm()).item() < 1e-10


def _block_convolutions(block: nn.Module) -> list[nn.Conv2d]:
    return [module for module in block.branch.modules() if isinstance(module, nn.Conv2d)]


@pytest.mark.parametrize(
    ("block_type", "depth"),
    [((3, 3), 16), ((3, 1, 3), 22), ((1, 3, 1), 22), ((1, 3), 16), ((3, 1), 16), ((3, 1, 1), 22)],
)
def test_wrn_block_types_give_the_papers_layer_structure(block_type, depth):
    model = wide_resnet(depth, 2, block_type=block_type, dropout_rate=0.3)
    blocks = _declared_blocks(model)
    assert len(blocks) == 3 * (depth - 4) // (3 * len(block_type))
    for block in blocks:
        kernels = tuple(conv.kernel_size[0] for conv in _block_convolutions(block))
        assert kernels == block_type
        dropouts = [module for module in block.branch.modules() if isinstance(module, nn.Dropout)]
        assert len(dropouts) == len(block_type) - 1 and all(module.p == 0.3 for module in dropouts)
    projections = [block for block in blocks if isinstance(block.shortcut, nn.Conv2d)]
    assert len(projections) == 3
    assert all(block.shortcut.kernel_size == (1, 1) for block in projections)
    assert all(not isinstance(block.pre_activation, nn.Identity) for block in projections)


def test_wrn_dropout_defaults_to_the_wrn_papers_cifar_rate():
    model = wide_resnet(16, 2)
    rates = {module.p for module in model.modules() if isinstance(module, nn.Dropout)}
    assert rates == {0.3}
    assert not [module for module in wide_resnet(16, 2, dropout_rate=0.0).modules() if isinstance(module, nn.Dropout)]


@pytest.mark.parametrize("deepening_factor", [1, 2, 3, 4])
def test_wrn_deepening_factor_stacks_that_many_3x3_convolutions(deepening_factor):
    depth = 3 * deepening_factor * 2 + 4
    model = wide_resnet(depth, 1, deepening_factor=deepening_factor)
    for block in _declared_blocks(model):
        assert [conv.kernel_size for conv in _block_convolutions(block)] == [(3, 3)] * deepening_factor
    assert len(_declared_blocks(model)) == 6


def test_wrn_28_10_has_4_blocks_per_stage_and_paper_widths():
    model = _model("wrn_28_10")
    widths = [_block_convolutions(block)[-1].out_channels for block in stochastic_blocks(model)]
    assert widths == [160] * 4 + [320] * 4 + [640] * 4


@pytest.mark.parametrize(
    ("builder", "bad"),
    [
        (lambda depth: wide_resnet(depth, 4), 30),
        (lambda depth: preact_resnet(depth), 100),
        (lambda depth: imagenet_resnet(depth), 34),
        (lambda depth: densenet_bc(depth, 12), 101),
    ],
)
def test_depths_not_of_the_familys_form_are_refused(builder, bad):
    with pytest.raises(ValueError, match="depth"):
        builder(bad)


def test_wrn_unknown_block_type_is_refused():
    with pytest.raises(ValueError, match="B\\(3, 3\\)"):
        wide_resnet(16, 2, block_type=(5, 5))


def test_preact_blocks_share_the_pre_activation_only_where_the_shape_changes():
    model = _model("preact_resnet164")
    for block in stochastic_blocks(model):
        if isinstance(block.shortcut, nn.Identity):
            assert isinstance(block.pre_activation, nn.Identity)
            assert isinstance(block.branch[0][0], nn.BatchNorm2d)
        else:
            assert isinstance(block.pre_activation[0], nn.BatchNorm2d)
            assert isinstance(block.branch[0], nn.Conv2d)
    assert sum(not isinstance(block.shortcut, nn.Identity) for block in stochastic_blocks(model)) == 3


def test_preact_stride_sits_on_the_first_1x1_convolution_as_in_the_authors_code():
    """resnet-pre-act.lua: the bottleneck's first 1x1 convolution carries the stride, the 3x3 does not."""
    model = _model("preact_resnet164")
    first_strides = []
    for block in stochastic_blocks(model):
        first, three_by_three = _block_convolutions(block)[:2]
        assert (first.kernel_size, three_by_three.kernel_size) == ((1, 1), (3, 3))
        assert three_by_three.stride == (1, 1)
        first_strides.append(first.stride[0])
        shortcut_stride = block.shortcut.stride[0] if isinstance(block.shortcut, nn.Conv2d) else 1
        assert first.stride[0] == shortcut_stride
    assert first_strides.count(2) == 2


def test_densenet_has_no_stochastic_blocks_and_refuses_another_rule():
    assert stochdepth.survival_probs(_model("densenet_bc_100_12")) == []
    with pytest.raises(ValueError, match="does not apply to densenet_bc_100_12"):
        stochdepth.create_model("densenet_bc_100_12", survival_rule="linear")


@pytest.mark.parametrize("name", ["imagenet_resnet50", "preact_resnet164", "wrn_16_8"])
def test_sample_mode_works_where_feature_maps_reach_one_by_one(name):
    model = stochdepth.create_model(name, in_channels=1, drop_mode="sample", final_survival_prob=0.2).train()
    size = 28 if name.startswith("imagenet") else 4
    x = torch.randn(3, 1, size, size)
    for _ in range(4):
        logits = model(x)
        logits.sum().backward()
    assert torch.isfinite(logits).all()
