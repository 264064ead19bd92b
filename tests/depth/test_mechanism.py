"""The stochastic-depth mechanism: schedules, gates, skipping, eval scaling, zero gradients for dropped blocks."""

import copy
import itertools
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import stochdepth
from stochdepth.depth import (
    GateGenerator,
    ResidualBlock,
    StochasticResidual,
    stochastic_blocks,
    survival_schedule,
    survivor_counts,
)
from stochdepth.depth.gates import subset_sizes
from tests.helpers import randomise_batchnorm


def test_linear_schedule_of_resnet110_is_eq4():
    probs = stochdepth.survival_probs(stochdepth.create_model("resnet110", final_survival_prob=0.5))
    assert len(probs) == 54
    assert probs[0] == pytest.approx(1 - 0.5 / 54)
    assert probs[-1] == pytest.approx(0.5)
    assert probs == pytest.approx([1 - (block / 54) * 0.5 for block in range(1, 55)])
    assert all(earlier > later for earlier, later in itertools.pairwise(probs))


def test_the_exponential_schedule_is_layerskips_rise_over_depth():
    probs = survival_schedule(12, "exponential", 0.4)
    assert probs[0] == 1.0 and probs[-1] == pytest.approx(0.4)
    assert probs == pytest.approx([1 - (2 ** (block / 11) - 1) * 0.6 for block in range(12)])
    drops = [1 - prob for prob in probs]
    steps = [later - earlier for earlier, later in itertools.pairwise(drops)]
    assert all(later > earlier for earlier, later in itertools.pairwise(steps)), "the drop rate rises faster with depth"
    assert survival_schedule(1, "exponential", 0.4) == [0.4]
    model = stochdepth.create_model("resnet20", survival_rule="exponential", final_survival_prob=0.5)
    assert model.depth_options["survival_rule"] == "exponential"
    assert stochdepth.survival_probs(model) == pytest.approx(survival_schedule(9, "exponential", 0.5))


def test_uniform_and_none_schedules():
    assert (
        stochdepth.survival_probs(stochdepth.create_model("resnet20", survival_rule="uniform", final_survival_prob=0.8))
        == [0.8] * 9
    )
    assert stochdepth.survival_probs(stochdepth.create_model("resnet20", survival_rule="none")) == [1.0] * 9
    assert survival_schedule(4, "linear", 0.2) == pytest.approx([0.8, 0.6, 0.4, 0.2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"survival_rule": "cosine"}, "linear, uniform, exponential, none"),
        ({"drop_mode": "row"}, "batch, sample"),
        ({"scaling": "half"}, "paper, inverted"),
        ({"final_survival_prob": 0.0}, r"\(0, 1\]"),
        ({"final_survival_prob": 1.5}, r"\(0, 1\]"),
        ({"final_survival_prob": -0.1}, r"\(0, 1\]"),
    ],
)
def test_bad_options_raise_value_error_naming_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        stochdepth.create_model("resnet8", **kwargs)


def test_stochastic_depth_cannot_be_applied_twice():
    model = stochdepth.create_model("resnet8")
    with pytest.raises(ValueError, match="already applied"):
        stochdepth.depth.stochastic_depth(model)


@pytest.mark.parametrize("survival_prob", [0.03, 0.1, 0.37, 0.5, 0.74, 0.99, 1.0])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 8, 128])
def test_survivor_count_is_unbiased_and_never_one(survival_prob, batch_size):
    grid = (torch.arange(400, dtype=torch.float64) + 0.5) / 400
    rounding = grid.repeat_interleave(2)
    split = torch.tensor([0.25, 0.75], dtype=torch.float64).repeat(400)
    counts = survivor_counts(torch.full((800,), survival_prob), batch_size, rounding, split)
    assert counts.min() >= 0
    assert counts.max() <= batch_size
    if batch_size >= 2:
        assert not (counts == 1).any()
    assert counts.double().mean().item() == pytest.approx(survival_prob * batch_size, abs=1e-9)


def _record_branch_calls(model: nn.Module) -> list[list[int]]:
    """Per block, how many samples ran its branch at each forward call."""
    calls = [[] for _ in stochastic_blocks(model)]
    for block, record in zip(stochastic_blocks(model), calls):
        block.branch.register_forward_hook(lambda module, args, output, record=record: record.append(args[0].shape[0]))
    return calls


def _gate_matrix(model: nn.Module, steps: int, batch_size: int = 2) -> torch.Tensor:
    """steps x blocks matrix of 1 (branch ran) / 0 (dropped) from training forward passes."""
    calls = _record_branch_calls(model)
    ran = torch.zeros(steps, len(calls))
    model.train()
    x = torch.randn(batch_size, 3, 8, 8)
    with torch.no_grad():
        for step in range(steps):
            before = [len(record) for record in calls]
            model(x)
            ran[step] = torch.tensor([float(len(record) > count) for record, count in zip(calls, before)])
    return ran


def test_gate_frequencies_match_survival_probs_within_binomial_bounds():
    steps = 1500
    model = stochdepth.create_model("resnet20", final_survival_prob=0.3, gate_seed=7)
    frequencies = _gate_matrix(model, steps).mean(dim=0)
    for frequency, prob in zip(frequencies.tolist(), stochdepth.survival_probs(model)):
        bound = 4.5 * math.sqrt(prob * (1 - prob) / steps)
        assert abs(frequency - prob) <= bound, (frequency, prob, bound)


def test_same_seed_same_gates_and_gates_depend_only_on_seed_and_step():
    first = _gate_matrix(stochdepth.create_model("resnet8", gate_seed=3), steps=60, batch_size=2)
    again = _gate_matrix(stochdepth.create_model("resnet8", gate_seed=3), steps=60, batch_size=5)
    other = _gate_matrix(stochdepth.create_model("resnet8", gate_seed=4), steps=60, batch_size=2)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert 0 < first.mean() < 1


def test_gate_generator_state_round_trips_and_survives_deepcopy():
    probs = [0.9, 0.5, 0.2]
    gates = GateGenerator(11, probs, "batch")
    state = gates.state_dict()
    draws = [gates.draw_step(4, torch.device("cpu")).survives for _ in range(50)]
    restored = GateGenerator(0, probs, "batch")
    restored.load_state_dict(state)
    assert [restored.draw_step(4, torch.device("cpu")).survives for _ in range(50)] == draws
    model = stochdepth.create_model("resnet8", gate_seed=5)
    copied = copy.deepcopy(model)
    assert all(block.gates is copied.gate_generator for block in stochastic_blocks(copied))
    assert torch.equal(_gate_matrix(model, 20), _gate_matrix(copied, 20))


def _expected_and_measured_flops(model: nn.Module, x: torch.Tensor, passes: int) -> tuple[float, float, float]:
    """Schedule-expected mean FLOPs, measured mean FLOPs and the standard error of the mean."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    full = counter.get_total_flops()
    inputs = {}
    hooks = [
        block.register_forward_pre_hook(lambda module, args: inputs.__setitem__(module, args[0]))
        for block in stochastic_blocks(model)
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    saved = 0.0
    for block in stochastic_blocks(model):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            block.branch(block.pre_activation(inputs[block]))
        saved += (1 - block.survival_prob) * counter.get_total_flops()
    model.train()
    totals = []
    with torch.no_grad():
        for _ in range(passes):
            with FlopCounterMode(display=False) as counter:
                model(x)
            totals.append(float(counter.get_total_flops()))
    totals = torch.tensor(totals, dtype=torch.float64)
    return full - saved, totals.mean().item(), totals.std().item() / math.sqrt(passes), full


@pytest.mark.parametrize(
    ("name", "drop_mode", "size", "passes"),
    [
        ("resnet110", "batch", 8, 60),
        ("resnet110", "sample", 8, 60),
        ("preact_resnet164", "batch", 8, 60),
        ("wrn_16_8", "sample", 8, 60),
    ],
)
def test_training_flops_fall_as_the_schedule_says(name, drop_mode, size, passes):
    """Every family: mean training FLOPs equal the full network's less (1 - p_l) of each branch's cost."""
    model = stochdepth.create_model(name, num_classes=10, drop_mode=drop_mode, gate_seed=1)
    x = torch.randn(8, 3, size, size)
    expected, measured, standard_error, full = _expected_and_measured_flops(model, x, passes=passes)
    assert abs(measured - expected) <= 4.5 * standard_error + 1e-6 * full
    assert measured < 0.85 * full
    if name == "resnet110":
        assert expected / full == pytest.approx(0.745, abs=0.01)


def test_eval_runs_every_block_and_scales_each_branch_by_its_survival_prob():
    model = randomise_batchnorm(stochdepth.create_model("resnet8", final_survival_prob=0.4)).eval()
    x = torch.randn(3, 3, 16, 16)
    calls = _record_branch_calls(model)
    with torch.no_grad():
        expected = model.stem(x)
        for block in model.blocks:
            expected = torch.relu(block.shortcut(expected) + block.survival_prob * block.branch(expected))
        expected = model.head(expected)
        output = model(x)
    assert all(len(record) == 2 for record in calls)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    assert [block.survival_prob for block in model.blocks] == pytest.approx([1 - 0.6 / 3, 1 - 1.2 / 3, 0.4])


def _single_block(survival_prob: float, drop_mode: str, **block_options: object) -> StochasticResidual:
    branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1))
    gates = GateGenerator(0, [survival_prob], drop_mode)
    return StochasticResidual(ResidualBlock(branch, **block_options), survival_prob, 0, gates).train()


@pytest.mark.parametrize("dropped_returns_shortcut", [False, True])
@pytest.mark.parametrize("survivors", [[], [2], [0, 1, 2, 3, 4, 5], [1, 4]])
def test_sample_mode_runs_the_branch_on_the_survivors_only(survivors, dropped_returns_shortcut, monkeypatch):
    block = _single_block(0.5, "sample", post_activation=nn.ReLU(), dropped_returns_shortcut=dropped_returns_shortcut)
    rows = None if len(survivors) in (0, 6) else torch.tensor(survivors, dtype=torch.long)
    monkeypatch.setattr(block.gates, "gate", lambda index, batch, device: (bool(survivors), rows))
    x = torch.randn(6, 4, 5, 5).relu()
    calls = _record_branch_calls(nn.Sequential(block))
    output = block(x)
    assert calls[0] == ([len(survivors)] if survivors else [])
    expected = x.clone()
    if survivors:
        expected[survivors] = torch.relu(x[survivors] + block.branch(x[survivors]))
    torch.testing.assert_close(output, expected)


@pytest.mark.parametrize("drop_mode", ["batch", "sample"])
def test_one_host_draw_per_training_step_for_all_blocks(monkeypatch, drop_mode):
    model = stochdepth.create_model("resnet110", drop_mode=drop_mode, gate_seed=0).train()
    gates = model.gate_generator
    draws = []
    real_draw = gates.draw_step
    monkeypatch.setattr(gates, "draw_step", lambda *args: draws.append(args) or real_draw(*args))
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 8, 8))
    assert len(draws) == 3


def test_sample_mode_on_one_by_one_maps_never_leaves_batchnorm_one_sample():
    block = _single_block(0.5, "sample")
    x = torch.randn(2, 4, 1, 1, requires_grad=True)
    calls = _record_branch_calls(nn.Sequential(block))
    for _ in range(40):
        block.gates.begin_step()
        block(x).sum().backward()
    assert set(calls[0]) == {2}
    assert len(calls[0]) < 40


@pytest.mark.parametrize("input_requires_grad", [True, False])
def test_a_dropped_batch_mode_block_returns_its_shortcut_and_its_branch_gets_an_exact_zero_gradient(
    input_requires_grad,
):
    block = _single_block(0.5, "batch")
    x = torch.randn(2, 4, 5, 5, requires_grad=input_requires_grad)
    calls = _record_branch_calls(nn.Sequential(block))
    dropped = 0
    for _ in range(30):
        before = len(calls[0])
        for param in block.parameters():
            param.grad = None
        block.gates.begin_step()
        output = block(x)
        (output * 2).sum().backward()
        if len(calls[0]) == before:
            dropped += 1
            assert torch.equal(output, x)
            assert all(param.grad is not None and not param.grad.any() for param in block.branch.parameters())
        else:
            assert all(param.grad is not None and param.grad.any() for param in block.branch[0].parameters())
    assert 0 < dropped < 30


@pytest.mark.parametrize("set_to_none", [True, False])
def test_dropped_blocks_still_get_weight_decay_and_momentum_with_a_plain_optimizer(set_to_none):
    model = stochdepth.create_model("resnet8", survival_rule="uniform", final_survival_prob=0.5, gate_seed=2)
    learning_rate, momentum, weight_decay = 0.1, 0.9, 1e-2
    optimizer = torch.optim.SGD(
        model.parameters(), lr=learning_rate, momentum=momentum, weight_decay=weight_decay, nesterov=True
    )
    calls = _record_branch_calls(model)
    x, target = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    dropped_weights = None
    for _ in range(10):
        before = [len(record) for record in calls]
        weights = [block.branch[0].weight.detach().clone() for block in model.blocks]
        optimizer.zero_grad(set_to_none=set_to_none)
        nn.functional.cross_entropy(model(x), target).backward()
        optimizer.step()
        dropped = [index for index, (record, count) in enumerate(zip(calls, before)) if len(record) == count]
        if dropped:
            dropped_weights = (dropped[0], weights[dropped[0]])
            break
    assert dropped_weights is not None, "no block was dropped in 10 steps"
    index, weight = dropped_weights
    # First step, zero gradient: buffer = wd * w, update = wd * w + momentum * buffer (Nesterov).
    expected = weight - learning_rate * (1 + momentum) * weight_decay * weight
    torch.testing.assert_close(model.blocks[index].branch[0].weight.detach(), expected)
    assert "momentum_buffer" in optimizer.state[model.blocks[index].branch[0].weight]


class _TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_a_network_without_residual_blocks_is_refused_by_name_unless_constant_depth():
    with pytest.raises(ValueError, match="no residual block found in _TwoLayer"):
        stochdepth.stochastic_depth(_TwoLayer(), survival_rule="linear")
    constant = stochdepth.stochastic_depth(_TwoLayer(), survival_rule="none")
    assert stochdepth.survival_probs(constant) == [] and constant.depth_options["final_survival_prob"] == 1.0


class _UserBlock(nn.Module):
    """A block type this library does not know, taught to the discovery rule through an adapter."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def test_registered_adapters_are_found_by_module_type_in_forward_order(monkeypatch):
    from stochdepth.depth import residual

    monkeypatch.setattr(residual, "_ADAPTERS", dict(residual._ADAPTERS))
    made = []

    def make(block, probs, index, gates):
        made.append((index, probs))
        return StochasticResidual(ResidualBlock(block.body), probs[0], index, gates)

    stochdepth.register_residual_adapter(_UserBlock, residual.ResidualAdapter(lambda block: 1, make))
    network = nn.Sequential(nn.Conv2d(3, 4, 1), _UserBlock(), ResidualBlock(nn.Conv2d(4, 4, 1)), _UserBlock())
    stochdepth.stochastic_depth(network, survival_rule="linear", final_survival_prob=0.4)
    assert [index for index, _ in made] == [0, 2]
    assert stochdepth.survival_probs(network) == pytest.approx([0.8, 0.6, 0.4])
    with pytest.raises(ValueError, match="already registered"):
        stochdepth.register_residual_adapter(_UserBlock, residual.ResidualAdapter(lambda block: 1, make))


def _rows_run(step, index: int) -> list[int]:
    """The rows branch ``index`` ran on in a drawn step."""
    rows = step.rows[index]
    if rows is None:
        return list(range(step.batch_size)) if step.survives[index] else []
    return rows.tolist()


def _draw_on_ranks(monkeypatch, shards: list[GateGenerator], batch_size: int) -> list:
    """One step's gates drawn by each of ``shards`` as rank r of len(shards) would draw them."""
    from stochdepth.depth import gates as gates_module

    parts = []
    for rank, gates in enumerate(shards):
        monkeypatch.setattr(gates_module, "data_parallel_position", lambda rank=rank: (rank, len(shards)))
        parts.append(gates.draw_step(batch_size, torch.device("cpu")))
    monkeypatch.undo()
    return parts


@pytest.mark.parametrize("drop_mode", ["sample", "subset"])
def test_no_rank_runs_a_branch_on_one_row_and_every_sample_survives_with_its_probability(monkeypatch, drop_mode):
    """The issue's case: p_L 0.3 over 8 blocks, 8 images on each of 2 ranks; ranks agree on what runs anywhere."""
    probs = survival_schedule(8, "linear", 0.3)
    shards = [GateGenerator(8, probs, drop_mode) for _ in range(2)]
    steps, batch_size = 600, 8
    inclusions = torch.zeros(2, len(probs), batch_size)
    for _ in range(steps):
        parts = _draw_on_ranks(monkeypatch, shards, batch_size)
        assert parts[0].runs_anywhere == parts[1].runs_anywhere
        for rank, step in enumerate(parts):
            for branch in range(len(probs)):
                rows = _rows_run(step, branch)
                assert len(rows) != 1, (rank, branch, rows)
                inclusions[rank, branch, rows] += 1
    assert shards[0].branches_run == shards[1].branches_run
    frequency = inclusions / steps
    if drop_mode == "subset":
        sizes = [min(max(round(prob * batch_size), 2), batch_size) for prob in probs]
        assert inclusions.sum(dim=2).tolist() == [[size * steps for size in sizes]] * 2
        probs = [size / batch_size for size in sizes]
    for branch, prob in enumerate(probs):
        bound = 4.5 * math.sqrt(prob * (1 - prob) / steps) + 1e-9
        assert (frequency[:, branch] - prob).abs().max() <= bound, (branch, frequency[:, branch], prob)


def test_one_process_draws_the_same_sample_mode_gates_as_before_ranks_were_counted_apart():
    """A single process's sequence is unchanged: the per-rank draw of one rank is the former global draw."""
    probs = [0.9, 0.6, 0.3]
    gates = GateGenerator(8, probs, "sample")
    reference = torch.Generator().manual_seed(8)
    for _ in range(20):
        step = gates.draw_step(6, torch.device("cpu"))
        draws = torch.rand(2, 3, generator=reference, dtype=torch.float64)
        counts = survivor_counts(torch.tensor(probs), 6, draws[0], draws[1])
        order = torch.rand(3, 6, generator=reference).argsort(dim=1)
        for branch in range(3):
            expected = sorted(order[branch][: counts[branch]].tolist())
            assert _rows_run(step, branch) == expected


def _mean_and_standard_error(network: nn.Module, x: torch.Tensor, passes: int) -> tuple[torch.Tensor, torch.Tensor]:
    network.train()
    with torch.no_grad():
        outputs = torch.stack([network(x) for _ in range(passes)]).double()
    return outputs.mean(dim=0), outputs.std(dim=0) / math.sqrt(passes)


def _small_torchvision_convnext(drop_rate: float) -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    setting = [CNBlockConfig(8, 16, 2), CNBlockConfig(16, None, 2)]
    return ConvNeXt(setting, stochastic_depth_prob=drop_rate, num_classes=5)


@pytest.mark.parametrize("library", ["timm", "torchvision"])
def test_sample_mode_inverted_scaling_has_the_native_drop_paths_expected_output(library):
    """Mean output over many passes against the network's own drop path, same weights, in standard errors."""
    torch.manual_seed(0)
    if library == "timm":
        import timm

        native = timm.create_model("convnext_atto", num_classes=5, drop_path_rate=0.6)
    else:
        native = _small_torchvision_convnext(0.6)
    with torch.no_grad():
        for param in native.parameters():
            param.add_(0.2 * torch.randn_like(param))  # layer scales far from zero: branches matter
    converted = stochdepth.stochastic_depth(copy.deepcopy(native), drop_mode="sample", gate_seed=1)
    x = torch.randn(2, 3, 32, 32)  # at batch 2 the former share-of-the-batch scaling never rescaled (mean z^2 > 15)
    passes = 300
    native_mean, native_error = _mean_and_standard_error(native, x, passes)
    converted_mean, converted_error = _mean_and_standard_error(converted, x, passes)
    z = (converted_mean - native_mean) / (native_error.square() + converted_error.square()).sqrt()
    assert z.square().mean() < 2.0, z
    assert z.abs().max() < 5.0, z


@pytest.mark.parametrize("batch_size", [2, 5, 8])
def test_subset_mode_runs_a_fixed_number_of_rows_and_scales_by_the_batch_over_them(batch_size):
    probs = survival_schedule(3, "linear", 0.1)
    torch.manual_seed(0)
    branches = [nn.Linear(3, 3, bias=False) for _ in probs]
    network = nn.Sequential(*(ResidualBlock(branch) for branch in branches))
    stochdepth.stochastic_depth(network, final_survival_prob=0.1, drop_mode="subset", scaling="inverted")
    gates = stochdepth.gate_generator(network)
    sizes = [min(max(round(prob * batch_size), 2), batch_size) for prob in probs]
    assert subset_sizes(torch.tensor(probs, dtype=torch.float64), batch_size).tolist() == sizes
    calls = [[] for _ in branches]
    for branch, record in zip(branches, calls):
        branch.register_forward_hook(lambda module, args, output, record=record: record.append(args[0].shape[0]))
    x = torch.randn(batch_size, 3)
    with torch.no_grad():
        network.train()
        for _ in range(5):
            network(x)
    assert calls == [[size] * 5 for size in sizes]
    block = network[0]
    gates.begin_step()
    with torch.no_grad():
        out = block(x)
    rows = _rows_run(gates.step, 0)
    expected = x.clone()
    expected[rows] += branches[0](x[rows]) * batch_size / sizes[0]
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("survival_rule", ["linear", "uniform"])
def test_a_final_survival_prob_of_one_is_constant_depth_under_either_rule(survival_rule):
    model = stochdepth.create_model("resnet8", survival_rule=survival_rule, final_survival_prob=1.0)
    assert model.depth_options["survival_rule"] == "none"
    assert stochdepth.survival_probs(model) == [1.0] * 3


@pytest.mark.parametrize("survivors", [[2], [0, 3, 4], [1, 2, 3, 4, 5]])
def test_sample_mode_gradients_equal_the_mask_multiply_reference_with_the_same_gates(survivors, monkeypatch):
    """Running on the surviving rows (their gathered copy not kept for backward) is a per-sample mask multiply."""
    branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1))
    block = StochasticResidual(
        ResidualBlock(branch, post_activation=nn.ReLU(), dropped_returns_shortcut=True),
        0.5,
        0,
        GateGenerator(0, [0.5], "sample"),
    ).train()
    rows = torch.tensor(survivors)
    monkeypatch.setattr(block.gates, "gate", lambda index, batch, device: (True, rows))
    x = (torch.randn(6, 4, 5, 5).abs() + 0.1).requires_grad_()
    reference_x = x.detach().clone().requires_grad_()
    weights = torch.randn(6, 4, 5, 5)
    (block(x) * weights).sum().backward()
    ours = [param.grad.clone() for param in branch.parameters()]
    branch.zero_grad()
    mask = torch.zeros(6, 1, 1, 1)
    mask[rows] = 1.0
    (torch.relu(reference_x + mask * branch(reference_x)) * weights).sum().backward()
    torch.testing.assert_close(x.grad, reference_x.grad)
    for mine, theirs in zip(ours, branch.parameters()):
        torch.testing.assert_close(mine, theirs.grad)


def test_sample_mode_passes_the_branchs_saved_tensors_through_the_users_own_hooks(monkeypatch):
    """``save_on_cpu`` or a user's hooks still see what the branch saves (only the gathered rows are not)."""
    branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1))
    block = StochasticResidual(ResidualBlock(branch), 0.5, 0, GateGenerator(0, [0.5], "sample")).train()
    rows = torch.tensor([0, 3, 4])
    monkeypatch.setattr(block.gates, "gate", lambda index, batch, device: (True, rows))
    x = torch.randn(6, 4, 5, 5, requires_grad=True)
    packed_shapes, unpacked = [], []

    def pack(tensor: torch.Tensor) -> list[torch.Tensor]:
        packed_shapes.append(tuple(tensor.shape))
        return [tensor.clone()]

    def unpack(box: list[torch.Tensor]) -> torch.Tensor:
        unpacked.append(box)
        return box[0]

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = block(x)
    out.square().sum().backward()
    assert (4, 4, 1, 1) in packed_shapes, "the last convolution's saved weight went through the user's pack hook"
    assert packed_shapes.count((3, 4, 5, 5)) >= 2, "so did the ReLU's output on the 3 surviving rows"
    assert unpacked, "and came back through the user's unpack hook"
    expected_grad = x.grad.clone()
    x.grad = None
    branch.zero_grad()
    block(x).square().sum().backward()
    torch.testing.assert_close(x.grad, expected_grad)


def test_contradictions_in_the_api_are_value_errors():
    import torchvision

    with pytest.raises(ValueError, match="drop rate must be in"):
        stochdepth.stochastic_depth(torchvision.models.convnext_tiny(stochastic_depth_prob=-0.5))
    with pytest.raises(ValueError, match=r"at least 0\.001"):
        stochdepth.create_model("resnet8", final_survival_prob=1e-320)
    with pytest.raises(ValueError, match="fixes 'depth' itself"):
        stochdepth.create_model("resnet8", depth=10)
    with pytest.raises(ValueError, match="must be text"):
        stochdepth.create_model(123)


def test_a_block_whose_forward_was_replaced_on_the_instance_is_not_converted():
    network = nn.Sequential(ResidualBlock(nn.Conv2d(4, 4, 1)), ResidualBlock(nn.Conv2d(4, 4, 1)))
    network[1].forward = lambda x: x * 2
    stochdepth.stochastic_depth(network, final_survival_prob=0.5)
    assert [type(block) for block in network] == [StochasticResidual, ResidualBlock]
    assert stochdepth.survival_probs(network) == [0.5]
