"""CIFAR ResNet (He et al. 2015): sizes, costs, shapes and the depth rule."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import stochdepth
from stochdepth.models import cifar_resnet


def _parameters(model: nn.Module) -> int:
    return sum(param.numel() for param in model.parameters())


@pytest.mark.parametrize(
    ("name", "millions"),
    [("resnet20", 0.27), ("resnet56", 0.85), ("resnet110", 1.7), ("resnet1202", 19.4)],
)
def test_parameter_counts_match_he_et_al(name, millions):
    assert _parameters(stochdepth.create_model(name)) / 1e6 == pytest.approx(millions, rel=0.03)


def test_resnet110_costs_0_253_g_multiply_adds_per_image():
    model = stochdepth.create_model("resnet110").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32))
    assert counter.get_total_flops() / 2 / 1e9 == pytest.approx(0.253, rel=0.01)


@pytest.mark.parametrize(("name", "blocks"), [("resnet8", 3), ("resnet110", 54), ("resnet152", 75)])
def test_depth_is_6n_plus_2(name, blocks):
    model = stochdepth.create_model(name)
    assert len(stochdepth.survival_probs(model)) == blocks
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert len(convolutions) + 1 == int(name.removeprefix("resnet"))
    assert all(conv.kernel_size == (3, 3) for conv in convolutions)


def test_any_depth_of_the_form_6n_plus_2_and_nothing_else():
    assert len(stochdepth.survival_probs(stochdepth.stochastic_depth(cifar_resnet(depth=14)))) == 6
    for depth in (7, 9, 2, 111, 20.0):
        with pytest.raises(ValueError, match="6n \\+ 2"):
            cifar_resnet(depth=depth)


@pytest.mark.parametrize(("in_channels", "size"), [(3, 32), (1, 28)])
@pytest.mark.parametrize("drop_mode", ["batch", "sample"])
def test_forward_and_backward_on_cifar_and_fashion_mnist_shapes(in_channels, size, drop_mode):
    model = stochdepth.create_model("resnet8", num_classes=7, in_channels=in_channels, drop_mode=drop_mode)
    x = torch.randn(4, in_channels, size, size)
    logits = model(x)
    assert logits.shape == (4, 7)
    logits.sum().backward()
    assert model.stem[0].weight.grad is not None
    assert model.eval()(x).shape == (4, 7)


def test_transition_shortcut_is_the_papers_average_pooling_plus_zero_channels():
    """ResidualDrop.lua: SpatialAveragePooling(2, 2, 2, 2), then zero channels appended."""
    model = stochdepth.create_model("resnet8")
    transition = model.blocks[1]
    x = torch.randn(2, 16, 8, 8)
    out = transition.shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    reference = x.reshape(2, 16, 4, 2, 4, 2).mean(dim=(3, 5))
    torch.testing.assert_close(out[:, :16], reference)
    assert torch.count_nonzero(out[:, 16:]) == 0
    assert not list(transition.shortcut.parameters())


def test_transition_shortcut_on_an_odd_size_matches_the_strided_convolution():
    model = stochdepth.create_model("resnet8")
    transition = model.blocks[1]
    x = torch.randn(2, 16, 7, 7)
    out = transition.shortcut(x)
    assert out.shape[-2:] == transition.branch(x).shape[-2:] == (4, 4)
    torch.testing.assert_close(out[:, :16, 3, 3], x[:, :, 6, 6])
    torch.testing.assert_close(out[:, :16, 0, 3], x[:, :, 0:2, 6].mean(dim=-1))


def test_a_dropped_block_returns_its_shortcut_which_its_relu_would_not_change():
    """Eq. 2: H_l = id(H_{l-1}) for a dropped block; the ReLU is skipped because it is the identity there."""
    model = stochdepth.create_model("resnet8", survival_rule="none").eval()
    x = model.stem(torch.randn(3, 3, 16, 16))
    for block in model.blocks:
        assert block.dropped_returns_shortcut
        shortcut = block.shortcut(block.pre_activation(x))
        torch.testing.assert_close(block.post_activation(shortcut), shortcut, rtol=0, atol=0)
        x = block(x)
