"""Survival schedules over training time: the factor on the drop rates, the gates they realise, scaling, resume."""

import copy
import math

import pytest
import torch
import torchvision
from torch import nn

import stochdepth
from stochdepth.depth import ResidualBlock, TimeSchedule, stochastic_blocks, stochastic_depth

KINDS = ("ramp", "late", "early")


def test_each_schedule_scales_the_drop_rate_as_documented():
    total = 10
    factors = {kind: [TimeSchedule(kind, 0.3, total).drop_factor(step) for step in range(14)] for kind in KINDS}
    assert factors["ramp"] == pytest.approx([0, 1 / 3, 2 / 3] + [1] * 11)
    assert factors["late"] == [0, 0, 0] + [1] * 11
    assert factors["early"] == [1, 1, 1] + [0] * 11
    assert [TimeSchedule().drop_factor(step) for step in (0, 5, 10**9)] == [1, 1, 1]
    assert TimeSchedule("ramp", 0.0, total).drop_factor(0) == 1, "a ramp of no length is the full rate at once"
    assert TimeSchedule("late", 1.0, total).drop_factor(total - 1) == 0, "late at 1: nothing dropped in the run"


@pytest.mark.parametrize("kind", ["constant", *KINDS])
@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.37, 1.0])
@pytest.mark.parametrize(("start", "stop"), [(0, 100), (0, 37), (20, 21), (30, 90), (90, 130), (5, 5)])
def test_the_mean_factor_over_steps_is_the_mean_of_the_factors(kind, fraction, start, stop):
    schedule = TimeSchedule(kind, fraction, 100)
    factors = [schedule.drop_factor(step) for step in range(start, stop)]
    expected = sum(factors) / len(factors) if factors else schedule.drop_factor(start)
    assert schedule.mean_drop_factor(start, stop) == pytest.approx(expected, abs=1e-12)


def _gate_counts(model: nn.Module, steps: int, image_size: int) -> torch.Tensor:
    """steps x branches: 1 where the branch ran in that training step (a user's own loop, no trainer)."""
    blocks = list(stochastic_blocks(model))
    ran = torch.zeros(steps, len(blocks))
    gates = stochdepth.gate_generator(model)
    model.train()
    x = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        for step in range(steps):
            model(x)
            ran[step] = torch.tensor([float(gates.step.survives[block.first_index]) for block in blocks])
    return ran


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("network", ["resnet20", "torchvision/resnet18"])
def test_gates_realise_the_probabilities_in_force_at_each_step_within_binomial_bounds(kind, network):
    total, window = 480, 80
    if network.startswith("torchvision/"):
        model = stochastic_depth(
            torchvision.models.resnet18(num_classes=4),
            final_survival_prob=0.3,
            time_schedule=kind,
            time_schedule_fraction=0.5,
            total_steps=total,
            gate_seed=3,
        )
        image_size = 32
    else:
        model = stochdepth.create_model(
            network,
            final_survival_prob=0.3,
            time_schedule=kind,
            time_schedule_fraction=0.5,
            total_steps=total,
            gate_seed=3,
        )
        image_size = 8
    depth_probs = torch.tensor(stochdepth.survival_probs(model), dtype=torch.float64)
    ran = _gate_counts(model, total, image_size).double()
    schedule = TimeSchedule(kind, 0.5, total)
    in_force = torch.stack(
        [1 - schedule.drop_factor(step) * (1 - depth_probs) for step in range(total)]
    )  # steps x branches
    for start in range(0, total, window):
        expected = in_force[start : start + window].sum(dim=0)
        variance = (in_force[start : start + window] * (1 - in_force[start : start + window])).sum(dim=0)
        realised = ran[start : start + window].sum(dim=0)
        exact = variance == 0
        assert torch.equal(realised[exact], expected[exact]), (start, realised, expected)
        bound = 4.5 * variance.sqrt()
        assert ((realised - expected).abs() <= bound + 1e-9).all(), (kind, start, realised, expected)
    assert stochdepth.survival_probs_in_force(model) == pytest.approx(in_force[-1].tolist())
    assert stochdepth.survival_probs(model) == pytest.approx(depth_probs.tolist()), "the depth schedule is kept"


def _one_block(scaling: str, kind: str) -> tuple[nn.Module, nn.Linear]:
    torch.manual_seed(0)
    branch = nn.Linear(4, 4, bias=False)
    model = nn.Sequential(ResidualBlock(branch))
    stochastic_depth(
        model,
        survival_rule="uniform",
        final_survival_prob=0.5,
        scaling=scaling,
        time_schedule=kind,
        time_schedule_fraction=1.0,
        total_steps=10,
        gate_seed=0,
    )
    return model, branch


def test_inverted_scaling_divides_by_the_probability_in_force_at_each_step():
    model, branch = _one_block("inverted", "ramp")
    x = torch.randn(3, 4)
    model.train()
    outputs = set()
    with torch.no_grad():
        for step in range(12):
            prob = 1 - min(1.0, step / 10) * 0.5
            out = model(x)
            if torch.equal(out, x):
                outputs.add("dropped")
                continue
            torch.testing.assert_close(out, x + branch(x) / prob)
            outputs.add("ran")
    assert outputs == {"dropped", "ran"}


def test_evaluation_and_folding_multiply_by_the_probability_in_force_under_the_paper_scaling():
    model, branch = _one_block("paper", "early")
    x = torch.randn(3, 4)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(x), x + 0.5 * branch(x))
        model.train()
        for _ in range(11):
            model(x)
        model.eval()
        assert stochdepth.survival_probs_in_force(model) == [1.0]
        torch.testing.assert_close(model(x), x + branch(x))
        torch.testing.assert_close(stochdepth.fold_survival(model)(x), x + branch(x))


def test_the_step_count_is_gate_state_and_travels_with_copies_and_checkpoints():
    model = stochdepth.create_model("resnet8", time_schedule="late", time_schedule_fraction=0.5, total_steps=8)
    gates = stochdepth.gate_generator(model)
    model.train()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for _ in range(5):
            model(x)
    state = gates.state_dict()
    assert state["steps_taken"] == 5 and state["total_steps"] == 8
    fresh = stochdepth.create_model("resnet8", time_schedule="late", time_schedule_fraction=0.5, total_steps=8)
    stochdepth.gate_generator(fresh).load_state_dict(state)
    assert stochdepth.survival_probs_in_force(fresh) == stochdepth.survival_probs_in_force(model)
    assert stochdepth.survival_probs_in_force(fresh) != [1.0] * 3
    copied = copy.deepcopy(model)
    assert stochdepth.gate_generator(copied).steps_taken == 5
    assert stochdepth.survival_probs_in_force(copied) == stochdepth.survival_probs_in_force(model)
    damaged = [
        ({**state, "steps_taken": -1}, "steps_taken"),
        ({**state, "seed": math.inf}, "seed must be an integer"),
        ({"seed": 1}, "must hold 'seed' and 'state'"),
        ({**state, "state": torch.zeros(3, dtype=torch.uint8)}, "not a CPU generator's state"),
        ({**state, "state": torch.zeros_like(state["state"])}, "not a valid generator state"),
    ]
    for bad, message in damaged:
        with pytest.raises(ValueError, match=f"gate state: .*{message}"):
            stochdepth.gate_generator(fresh).load_state_dict(bad)
    assert stochdepth.survival_probs_in_force(fresh) == stochdepth.survival_probs_in_force(model), "left unchanged"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time_schedule": "cosine"}, "constant, ramp, late, early"),
        ({"time_schedule": "late"}, "needs total_steps"),
        ({"time_schedule": "ramp", "total_steps": 0}, "total_steps must be a positive integer"),
        ({"total_steps": -5}, "total_steps must be a positive integer"),
        ({"time_schedule": "late", "total_steps": 10, "time_schedule_fraction": 1.5}, r"\[0, 1\]"),
        ({"time_schedule": "late", "total_steps": 10, "time_schedule_fraction": math.nan}, r"\[0, 1\]"),
        ({"time_schedule": "late", "total_steps": 10.5}, "total_steps must be a positive integer"),
    ],
)
def test_bad_time_schedules_are_one_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        stochdepth.create_model("resnet8", **kwargs)
