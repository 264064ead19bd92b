"""Real skipping on torchvision's and timm's networks: recognition, state-dict keys, eval scaling, folding, FLOPs."""

import copy
import importlib

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import resnet as tv

import stochdepth
from stochdepth.depth import stochastic_blocks
from tests.helpers import assert_same_outputs_and_gradients, randomise_batchnorm, replayed_gates

timm = pytest.importorskip("timm")
from timm.models import resnet as timm_resnet  # noqa: E402
from timm.models import vision_transformer as vit  # noqa: E402


def _vit(**options) -> nn.Module:
    return vit.VisionTransformer(
        img_size=16, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=5, **options
    )


def _tv_convnext() -> nn.Module:
    from torchvision.models import convnext

    settings = [convnext.CNBlockConfig(8, 16, 1), convnext.CNBlockConfig(16, None, 1)]
    return convnext.ConvNeXt(settings, stochastic_depth_prob=0.0, layer_scale=0.5, num_classes=5)


def _tv_swin(version: int) -> nn.Module:
    from torchvision.models import swin_transformer as swin

    options = {} if version == 1 else {"block": swin.SwinTransformerBlockV2, "downsample_layer": swin.PatchMergingV2}
    return swin.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=8,
        depths=[1, 1],
        num_heads=[1, 2],
        window_size=[2, 2],
        stochastic_depth_prob=0.0,
        num_classes=5,
        **options,
    )


def _tv_vit() -> nn.Module:
    from torchvision.models import vision_transformer

    network = vision_transformer.VisionTransformer(
        image_size=16, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    )
    nn.init.normal_(network.heads.head.weight)  # torchvision starts it at zero: every output would be 0
    return network


def _tv_efficientnet() -> nn.Module:
    """Stem, a FusedMBConv and an MBConv with skips, an MBConv that halves the map (no skip), head."""
    from functools import partial

    from torchvision.models import efficientnet as effnet

    norm = partial(nn.BatchNorm2d, eps=1e-3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        effnet.FusedMBConv(effnet.FusedMBConvConfig(2, 3, 1, 8, 8, 1), 0.0, norm),
        effnet.MBConv(effnet.MBConvConfig(4, 3, 1, 8, 8, 1), 0.0, norm),
        effnet.MBConv(effnet.MBConvConfig(4, 3, 2, 8, 16, 1), 0.0, norm),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )


def _timm_convnext(version: int, **options) -> nn.Module:
    from timm.models import convnext

    layer_scale = {"ls_init_value": 0.5} if version == 1 else {"use_grn": True, "ls_init_value": None}
    return convnext.ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 8, 16, 16), num_classes=5, **layer_scale, **options)


def _timm_swin(version: int, **options) -> nn.Module:
    from timm.models import swin_transformer, swin_transformer_v2

    kind = swin_transformer.SwinTransformer if version == 1 else swin_transformer_v2.SwinTransformerV2
    options = {"drop_path_rate": 0.0, **options}
    return kind(img_size=32, window_size=4, embed_dim=8, depths=(1, 1), num_heads=(1, 2), num_classes=5, **options)


def _timm_efficientnet(**options) -> nn.Module:
    """A depthwise-separable, an inverted-residual (one halving the map, one with a skip) and edge-residual blocks."""
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.efficientnet import EfficientNet

    arch = [["ds_r1_k3_s1_e1_c8"], ["ir_r2_k3_s2_e4_c16_se0.25"], ["er_r2_k3_s1_e4_c16"]]
    return EfficientNet(decode_arch_def(arch), num_features=32, stem_size=8, num_classes=5, **options)


def _timm_eva(**options) -> nn.Module:
    from timm.models import eva

    return eva.Eva(
        img_size=16,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=5,
        use_rot_pos_emb=True,
        head_init_scale=1.0,
        **options,
    )


def _timm_regnet(**options) -> nn.Module:
    from timm.models import regnet

    config = regnet.RegNetCfg(depth=6, w0=8, wa=8.0, wm=2.0, group_size=8, stem_width=8, se_ratio=0.25)
    return regnet.RegNet(config, num_classes=5, **options)


def _tv_maxvit() -> nn.Module:
    from torchvision.models import maxvit

    return maxvit.MaxVit(
        input_size=(32, 32),
        stem_channels=8,
        partition_size=2,
        block_channels=[8, 16],
        block_layers=[1, 1],
        head_dim=4,
        stochastic_depth_prob=0.0,
        num_classes=5,
    )


def _tv_block(module_name: str, class_name: str) -> type:
    return getattr(importlib.import_module(f"torchvision.models.{module_name}"), class_name)


def _timm_block(module_name: str, class_name: str) -> type:
    return getattr(importlib.import_module(f"timm.models.{module_name}"), class_name)


NETWORKS = {
    "torchvision-basic": (lambda: tv.ResNet(tv.BasicBlock, [1, 1, 1, 1], num_classes=5), tv.BasicBlock, 4, 32),
    "torchvision-bottleneck": (lambda: tv.ResNet(tv.Bottleneck, [1, 1, 2, 1], num_classes=5), tv.Bottleneck, 5, 32),
    "timm-basic": (
        lambda: timm_resnet.ResNet(timm_resnet.BasicBlock, [1, 1, 1, 1], num_classes=5),
        timm_resnet.BasicBlock,
        4,
        32,
    ),
    "timm-bottleneck": (
        lambda: timm_resnet.ResNet(timm_resnet.Bottleneck, [1, 1, 1, 1], num_classes=5),
        timm_resnet.Bottleneck,
        4,
        32,
    ),
    "timm-vit": (_vit, vit.Block, 6, 16),
    "torchvision-convnext": (_tv_convnext, _tv_block("convnext", "CNBlock"), 2, 32),
    "torchvision-swin": (lambda: _tv_swin(1), _tv_block("swin_transformer", "SwinTransformerBlock"), 4, 32),
    "torchvision-swin-v2": (lambda: _tv_swin(2), _tv_block("swin_transformer", "SwinTransformerBlockV2"), 4, 32),
    "torchvision-vit": (_tv_vit, _tv_block("vision_transformer", "EncoderBlock"), 4, 16),
    "torchvision-efficientnet": (_tv_efficientnet, _tv_block("efficientnet", "MBConv"), 2, 16),
    "timm-vit-layerscale": (lambda: _vit(init_values=0.1), vit.Block, 6, 16),
    "torchvision-maxvit": (_tv_maxvit, _tv_block("maxvit", "PartitionAttentionLayer"), 10, 32),
    "timm-convnext": (lambda **o: _timm_convnext(1, **o), _timm_block("convnext", "ConvNeXtBlock"), 4, 32),
    "timm-convnext-v2": (lambda **o: _timm_convnext(2, **o), _timm_block("convnext", "ConvNeXtBlock"), 4, 32),
    "timm-swin": (lambda **o: _timm_swin(1, **o), _timm_block("swin_transformer", "SwinTransformerBlock"), 4, 32),
    "timm-swin-v2": (
        lambda **o: _timm_swin(2, **o),
        _timm_block("swin_transformer_v2", "SwinTransformerV2Block"),
        4,
        32,
    ),
    "timm-efficientnet": (_timm_efficientnet, _timm_block("_efficientnet_blocks", "InvertedResidual"), 4, 32),
    "timm-eva": (lambda **o: _timm_eva(init_values=0.1, **o), _timm_block("eva", "EvaBlock"), 4, 16),
    "timm-eva-post-norm": (
        lambda **o: _timm_eva(use_post_norm=True, **o),
        _timm_block("eva", "EvaBlockPostNorm"),
        4,
        16,
    ),
    "timm-regnet": (_timm_regnet, _timm_block("regnet", "Bottleneck"), 6, 32),
}


def _trained_looking(network: nn.Module) -> nn.Module:
    randomise_batchnorm(network)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
    return network


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("scaling", ["paper", "inverted"])
def test_blocks_are_recognised_keys_do_not_change_and_fold_restores_the_class(name, scaling):
    build, block_class, branches, size = NETWORKS[name]
    torch.manual_seed(0)
    original = _trained_looking(build()).eval()
    saved_before = copy.deepcopy(original.state_dict())
    network = stochdepth.stochastic_depth(copy.deepcopy(original), final_survival_prob=0.5, scaling=scaling)
    assert len(stochdepth.survival_probs(network)) == branches
    assert list(network.state_dict()) == list(saved_before)
    network.load_state_dict(saved_before)
    reloaded = build()
    reloaded.load_state_dict(network.state_dict())
    folded = stochdepth.fold_survival(network)
    assert all(type(module) is block_class for module in folded.modules() if isinstance(module, block_class))
    plain = build()
    plain.load_state_dict(folded.state_dict())
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        expected, output, unscaled = network.eval()(x), plain.eval()(x), original(x)
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-5)
    if scaling == "paper":
        assert not torch.allclose(expected, unscaled, atol=1e-4), "paper scaling multiplies branches by p_l"
    else:
        assert torch.equal(expected, unscaled), "inverted scaling evaluates the plain network"


@pytest.mark.parametrize("name", NETWORKS)
def test_converting_a_trained_network_with_its_default_keeps_its_evaluation_outputs_bit_for_bit(name):
    build, _, _, size = NETWORKS[name]
    torch.manual_seed(1)
    original = _trained_looking(build()).eval()
    network = stochdepth.stochastic_depth(copy.deepcopy(original), final_survival_prob=0.3)
    assert network.depth_options["scaling"] == "inverted"
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        assert torch.equal(network.eval()(x), original(x))


@pytest.mark.parametrize("drop_mode", ["batch", "sample"])
def test_inverted_training_divides_a_surviving_branch_by_its_share(drop_mode):
    """Batch mode: 1 / p_l. Sample mode: batch / rows it ran on, so the rows it ran on get branch * batch / rows."""
    network = stochdepth.stochastic_depth(
        _trained_looking(tv.ResNet(tv.BasicBlock, [1, 1, 1, 2])), final_survival_prob=0.5, drop_mode=drop_mode
    )
    block = network.layer4[1]
    x = torch.randn(8, 512, 2, 2).relu()
    shortcut = x
    with torch.no_grad():
        for _ in range(20):
            out = block.train()(x)
            branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
            gates = network.gate_generator.step
            index = block.first_index
            if not gates.survives[index]:
                torch.testing.assert_close(out, torch.relu(shortcut))
                continue
            rows = gates.rows[index]
            if rows is None:
                rows = torch.arange(8)
                share = block.survival_probs[0] if drop_mode == "batch" else 1.0
            else:
                share = rows.numel() / 8
            if gates.rows[index] is not None:
                branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x[rows])))))
                expected = torch.relu(shortcut[rows] + branch / share)
            else:
                expected = torch.relu(shortcut[rows] + branch[rows] / share)
            torch.testing.assert_close(out[rows], expected, rtol=1e-4, atol=1e-5)


def test_eval_is_shortcut_plus_survival_prob_times_branch_under_paper_scaling():
    network = stochdepth.stochastic_depth(
        _trained_looking(tv.ResNet(tv.BasicBlock, [1, 1, 1, 1])), final_survival_prob=0.2, scaling="paper"
    )
    block = network.layer2[0]
    x = torch.randn(2, 64, 8, 8).relu()
    with torch.no_grad():
        block.eval()
        branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
        expected = torch.relu(block.downsample(x) + block.survival_probs[0] * branch)
        torch.testing.assert_close(block(x), expected)


def _flops(network: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("drop_mode", ["batch", "sample"])
def test_training_flops_fall_to_the_schedules_share_within_a_binomial_bound(name, drop_mode):
    """Mean FLOPs over n steps: fixed + p * branches, within 4 standard errors of independent Bernoulli gates.

    The branches' FLOPs B are what a network with every branch dropped saves; per step the
    count is fixed + sum_l g_l b_l with Var <= p (1 - p) B^2 (sum b_l^2 <= B^2).
    """
    build, _, _, size = NETWORKS[name]
    x = torch.randn(8, 3, size, size)
    full = _flops(stochdepth.stochastic_depth(build(), survival_rule="none").train(), x)
    bare = _flops(stochdepth.stochastic_depth(build(), survival_rule="uniform", final_survival_prob=1e-3).train(), x)
    survival, steps = 0.3, 40
    network = stochdepth.stochastic_depth(
        build(), survival_rule="uniform", final_survival_prob=survival, drop_mode=drop_mode
    ).train()
    mean = sum(_flops(network, x) for _ in range(steps)) / steps
    branches = full - bare
    assert branches > 0.3 * full, "the branches are most of the network's work"
    bound = 4 * branches * (survival * (1 - survival) / steps) ** 0.5
    assert abs(mean - (bare + survival * branches)) <= bound


@pytest.mark.parametrize("name", NETWORKS)
def test_constant_depth_trains_exactly_as_the_original(name):
    build, _, _, size = NETWORKS[name]
    torch.manual_seed(2)
    original = _trained_looking(build()).train()
    network = stochdepth.stochastic_depth(copy.deepcopy(original), survival_rule="none").train()
    x = torch.randn(4, 3, size, size)
    expected, output = original(x), network(x)
    assert torch.equal(output, expected)
    expected.sum().backward()
    output.sum().backward()
    for (key, mine), theirs in zip(network.named_parameters(), original.parameters()):
        assert torch.equal(mine.grad, theirs.grad), key


class _ReplayedDropPath(nn.Module):
    """A mask multiply that replays given (mask, scale) pairs in call order: the drop path the adapters replace."""

    def __init__(self, replay: list[tuple[torch.Tensor, float]]) -> None:
        super().__init__()
        self.replay = replay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask, scale = self.replay.pop(0)
        return x * mask.view(-1, *[1] * (x.dim() - 1)) * scale


WITH_DROP_PATH = {
    "timm-basic": lambda **o: timm_resnet.ResNet(timm_resnet.BasicBlock, [1, 1, 1, 1], num_classes=5, **o),
    "timm-vit": lambda **o: _vit(init_values=0.1, **o),
    "timm-convnext": NETWORKS["timm-convnext"][0],
    "timm-convnext-v2": NETWORKS["timm-convnext-v2"][0],
    "timm-swin": NETWORKS["timm-swin"][0],
    "timm-swin-v2": NETWORKS["timm-swin-v2"][0],
    "timm-efficientnet": _timm_efficientnet,
    "timm-eva": NETWORKS["timm-eva"][0],
    "timm-eva-post-norm": NETWORKS["timm-eva-post-norm"][0],
    "timm-regnet": _timm_regnet,
}
"""Networks built with their own drop path at a rate: the conversion takes the rates over."""


def _native_rates(network: nn.Module) -> list[float]:
    """The rates of timm's DropPath layers in blocks that use them (EfficientNet's blocks without a skip do not)."""
    return [
        float(child.drop_prob)
        for module in network.modules()
        if getattr(module, "has_skip", True)
        for child in module.children()
        if type(child).__name__ == "DropPath"
    ]


@pytest.mark.parametrize("name", WITH_DROP_PATH)
def test_a_networks_own_drop_path_rates_become_its_schedule_exactly(name):
    network = WITH_DROP_PATH[name](drop_path_rate=0.4)
    rates = _native_rates(network)
    converted = stochdepth.stochastic_depth(network)
    assert converted.depth_options["survival_rule"] == "native"
    probs = stochdepth.survival_probs(converted)
    assert probs[0] == 1.0, "the first block's rate is 0 (timm then builds no DropPath)"
    assert [prob for prob in probs if prob < 1.0] == pytest.approx([1.0 - rate for rate in rates], abs=1e-7)
    assert min(probs) == pytest.approx(1.0 - max(rates), abs=1e-7)
    assert converted.depth_options["final_survival_prob"] == pytest.approx(min(probs))
    with pytest.raises(ValueError, match="own drop-path rates .* become the schedule"):
        stochdepth.stochastic_depth(WITH_DROP_PATH[name](drop_path_rate=0.4), final_survival_prob=0.5)


WITH_BATCHNORM_IN_BRANCHES = ("timm-basic", "timm-efficientnet", "timm-regnet")


@pytest.mark.parametrize(
    ("name", "drop_mode"),
    [(name, "batch") for name in WITH_DROP_PATH]
    + [(name, "sample") for name in WITH_DROP_PATH if name not in WITH_BATCHNORM_IN_BRANCHES],
)
def test_gradients_equal_the_networks_own_mask_multiply_with_the_same_gates(name, drop_mode):
    """The converted network skips; the original multiplies by the same masks: same outputs and gradients.

    In sample mode a BatchNorm inside a branch normalises over the surviving rows only, so the
    comparison there is for networks without BatchNorm in their branches.
    """
    build = WITH_DROP_PATH[name]
    torch.manual_seed(3)
    original = _trained_looking(build(drop_path_rate=0.5)).train()
    network = stochdepth.stochastic_depth(copy.deepcopy(original), drop_mode=drop_mode).train()
    size = NETWORKS[name][3] if name in NETWORKS else 32
    x = torch.randn(6, 3, size, size)
    output = network(x)
    output.square().sum().backward()
    replay = replayed_gates(network, 6)
    for module in list(original.modules()):
        for child_name, child in list(module.named_children()):
            if type(child).__name__ == "DropPath":
                setattr(module, child_name, _ReplayedDropPath(replay))
    expected = original(x)
    expected.square().sum().backward()
    assert not replay, "every branch's drop path was called once"
    assert_same_outputs_and_gradients(output, expected, network, original)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("survivors", [[], [1], [1, 3], [0, 1, 2, 3]])
def test_sample_mode_on_a_vit_block_with_none_one_or_all_survivors(survivors, masked, monkeypatch):
    """``masked``: a 4-D attention mask with a different row per sample goes with its sample."""
    network = stochdepth.stochastic_depth(
        _vit(), survival_rule="uniform", final_survival_prob=0.5, drop_mode="sample", scaling="paper"
    )
    block = network.blocks[0].train()
    rows = None if len(survivors) in (0, 4) else torch.tensor(survivors)
    monkeypatch.setattr(block.gates, "gate", lambda index, batch, device: (bool(survivors), rows))
    x = torch.randn(4, 5, 32, requires_grad=True)
    mask = torch.ones(4, 1, 5, 5, dtype=torch.bool)
    for row, hidden in enumerate([0, 2, 1, 3]):
        mask[row, :, :, 5 - hidden :] = False
    options = {"attn_mask": mask} if masked else {}
    out = block(x, **options)
    expected = x.clone()
    for row in survivors:
        single = x[row : row + 1]
        mask_row = {"attn_mask": mask[row : row + 1]} if masked else {}
        single = single + block.ls1(block.attn(block.norm1(single), **mask_row))
        expected[row] = (single + block.ls2(block.mlp(block.norm2(single))))[0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    grad = block.attn.qkv.weight.grad
    assert grad is not None and bool(grad.any()) == bool(survivors), "a dropped branch gets an exact zero gradient"


def test_torchvisions_own_stochastic_depth_rates_become_the_schedule():
    """torchvision's ConvNeXt ramps block i of L (from 0) to rate * i / (L - 1): p_l = 1 - rate (l - 1) / (L - 1)."""
    from torchvision.models import convnext

    settings = [convnext.CNBlockConfig(8, 16, 2), convnext.CNBlockConfig(16, None, 2)]
    network = convnext.ConvNeXt(settings, stochastic_depth_prob=0.4, layer_scale=0.5, num_classes=5)
    converted = stochdepth.stochastic_depth(network)
    assert stochdepth.survival_probs(converted) == pytest.approx([1.0 - 0.4 * block / 3 for block in range(4)])
    assert converted.depth_options["survival_rule"] == "native"


def test_a_drop_path_outside_recognised_blocks_is_refused_and_unrecognised_blocks_are_named():
    from timm.models._efficientnet_blocks import CondConvResidual

    network = _timm_efficientnet()
    network.blocks[1][1].__class__ = CondConvResidual  # a subclass with a forward of its own
    assert len(stochdepth.survival_probs(stochdepth.stochastic_depth(copy.deepcopy(network)))) == 3
    network.blocks[1][1].drop_path = timm.layers.DropPath(0.2)
    with pytest.raises(ValueError, match="DropPath 'blocks.1.1.drop_path' with rate 0.2 in a block that is not"):
        stochdepth.stochastic_depth(network)
    import torchvision

    with pytest.raises(ValueError, match="no residual block found in AlexNet: "):
        stochdepth.stochastic_depth(torchvision.models.alexnet(num_classes=5))
    blocks = nn.Sequential(network.blocks[1][1])
    with pytest.raises(ValueError, match=r"found CondConvResidual \(not recognised\): "):
        stochdepth.stochastic_depth(blocks)


def test_a_branch_that_ends_in_an_activation_folds_only_under_inverted_scaling():
    from timm.models._efficientnet_blocks import ConvBnAct

    network = nn.Sequential(ConvBnAct(8, 8, 3, skip=True), ConvBnAct(8, 8, 3, skip=False))
    converted = stochdepth.stochastic_depth(copy.deepcopy(network), final_survival_prob=0.5)
    assert len(stochdepth.survival_probs(converted)) == 1
    assert type(stochdepth.fold_survival(converted)[0]) is ConvBnAct
    paper = stochdepth.stochastic_depth(network, final_survival_prob=0.5, scaling="paper")
    with pytest.raises(ValueError, match="cannot fold p_l into TimmConvBnAct: its branch ends with an activation"):
        stochdepth.fold_survival(paper)


def test_dropped_torchvision_blocks_get_weight_decay_from_a_plain_optimizer():
    network = stochdepth.stochastic_depth(
        tv.ResNet(tv.BasicBlock, [1, 1, 1, 1], num_classes=5), survival_rule="uniform", final_survival_prob=0.01
    )
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, weight_decay=0.1)
    before = network.layer3[0].conv1.weight.detach().clone()
    network.train()(torch.randn(2, 3, 32, 32)).sum().backward()
    assert not any(network.gate_generator.step.survives)
    optimizer.step()
    torch.testing.assert_close(network.layer3[0].conv1.weight.detach(), before * (1 - 0.1 * 0.1))
    assert len(list(stochastic_blocks(network))) == 4


def test_torchvision_weights_load_into_the_papers_imagenet_network_as_they_are():
    weights = tv.resnet50(num_classes=1000).state_dict()
    network = stochdepth.create_model("imagenet_resnet50", final_survival_prob=0.5)
    network.load_state_dict(weights)
    assert len(stochdepth.survival_probs(network)) == 16
    folded = stochdepth.fold_survival(network)
    assert type(folded) is tv.ResNet and type(folded.layer1[0]) is tv.Bottleneck


def test_a_folded_torchvision_network_exports_with_torch_export():
    network = stochdepth.stochastic_depth(_trained_looking(tv.ResNet(tv.BasicBlock, [1, 1, 1, 1], num_classes=5)))
    folded = stochdepth.fold_survival(network)
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(folded, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), network.eval()(x), rtol=1e-4, atol=1e-5)


def test_torchvision_names_build_with_their_own_drop_path_handed_to_the_schedule():
    import torchvision

    network = stochdepth.create_model("torchvision/efficientnet_b0", num_classes=5, final_survival_prob=0.8)
    assert len(stochdepth.survival_probs(network)) == 9, "the 9 of 16 MBConv blocks that have a skip"
    rates = [module.p for module in network.modules() if isinstance(module, torchvision.ops.StochasticDepth)]
    assert rates and set(rates) == {0.0}
