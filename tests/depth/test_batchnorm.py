"""recalibrated_batchnorm: statistics of the network evaluation runs, and everything put back afterwards."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import stochdepth


def _trained_a_little(seed: int = 0) -> nn.Sequential:
    """ResNet-8 at p_L 0.2 after two training-mode passes (gates drawn, statistics moved), then dropout."""
    torch.manual_seed(seed)
    model = nn.Sequential(stochdepth.create_model("resnet8", final_survival_prob=0.2, gate_seed=3), nn.Dropout(0.5))
    for _ in range(2):
        model(torch.randn(6, 3, 8, 8))
    return model


def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": {name: value.clone() for name, value in model.state_dict().items()},
        "flags": [module.training for module in model.modules()],
        "momenta": [module.momentum for module in model.modules() if isinstance(module, nn.BatchNorm2d)],
        "gates": copy.deepcopy(stochdepth.gate_generator(model).state_dict()),
        "torch_rng": torch.get_rng_state(),
    }


def _assert_same(before: dict[str, object], after: dict[str, object]) -> None:
    assert before["state"].keys() == after["state"].keys()
    for name, value in before["state"].items():
        assert torch.equal(value, after["state"][name]), name
    assert before["flags"] == after["flags"] and before["momenta"] == after["momenta"]
    gates_before, gates_after = before["gates"], after["gates"]
    assert gates_before["steps_taken"] == gates_after["steps_taken"]
    assert torch.equal(gates_before["state"], gates_after["state"])
    assert torch.equal(before["torch_rng"], after["torch_rng"]), "no random number was drawn"


def test_the_statistics_are_update_bn_s_with_every_block_and_everything_is_put_back_afterwards():
    model = _trained_a_little()
    batches = [torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    expected = copy.deepcopy(model)
    with stochdepth.run_every_block(expected):
        torch.optim.swa_utils.update_bn(batches, expected)
    expected.eval()
    images = torch.randn(4, 3, 8, 8)
    before = _snapshot(model)
    with stochdepth.recalibrated_batchnorm(model, batches) as recalibrated:
        assert recalibrated is model
        assert not any(module.training for module in model.modules()), "all in evaluation mode"
        for (name, mine), theirs in zip(model.named_buffers(), expected.buffers()):
            torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6, msg=name)
        torch.testing.assert_close(model(images), expected(images), rtol=1e-5, atol=1e-5)
        changed = [name for name, value in model.state_dict().items() if not torch.equal(value, before["state"][name])]
        assert changed and all(
            name.rsplit(".", 1)[1] in {"running_mean", "running_var", "num_batches_tracked"} for name in changed
        ), "only BatchNorm statistics change"
    _assert_same(before, _snapshot(model))


def test_an_error_while_recalibrating_and_an_empty_batch_list_put_everything_back():
    model = _trained_a_little()
    images = torch.randn(4, 3, 8, 8)
    before = _snapshot(model)

    def failing():
        yield images
        raise RuntimeError("the data broke")

    with pytest.raises(RuntimeError, match="the data broke"), stochdepth.recalibrated_batchnorm(model, failing()):
        pass
    _assert_same(before, _snapshot(model))
    with pytest.raises(ValueError, match="at least one batch"), stochdepth.recalibrated_batchnorm(model, []):
        pass
    _assert_same(before, _snapshot(model))


def test_a_plain_network_is_recalibrated_and_one_without_batchnorm_runs_no_batch():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    batches = [torch.randn(5, 3, 6, 6) + 2.0 for _ in range(2)]
    with stochdepth.recalibrated_batchnorm(plain, batches):
        outputs = plain[0](torch.cat(batches))
        torch.testing.assert_close(plain[1].running_mean, outputs.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    assert torch.equal(plain[1].running_mean, torch.zeros(4)), "put back"

    def never():
        raise AssertionError("a network without BatchNorm needs no batch")
        yield

    with stochdepth.recalibrated_batchnorm(nn.Linear(2, 2), never()) as linear:
        assert not linear.training


def test_a_compiled_network_recalibrates_without_a_graph_break_to_the_eager_statistics():
    from torch._dynamo.utils import counters

    eager = _trained_a_little()
    compiled = copy.deepcopy(eager)
    compiled.compile(backend="eager")
    batches = [torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    torch._dynamo.reset()
    counters.clear()
    with stochdepth.recalibrated_batchnorm(eager, batches), stochdepth.recalibrated_batchnorm(compiled, batches):
        for (name, mine), theirs in zip(compiled.named_buffers(), eager.buffers()):
            torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6, msg=name)
    assert not counters["graph_break"], dict(counters["graph_break"])


class _SkipsOnSmallBatches(nn.Module):
    """BatchNorm ``always``, ``large_only`` on batches of more than 4 rows, ``never`` not at all."""

    def __init__(self) -> None:
        super().__init__()
        self.always, self.large_only, self.never = (nn.BatchNorm1d(3) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.always(x)
        return self.large_only(x) if len(x) > 4 else x


def test_each_layer_averages_over_the_batches_it_saw_as_update_bn_does():
    model = _SkipsOnSmallBatches()
    batches = [torch.randn(rows, 3, generator=torch.Generator().manual_seed(rows)) * rows for rows in (8, 2, 6, 3)]
    expected = copy.deepcopy(model)
    torch.optim.swa_utils.update_bn(batches, expected)
    with stochdepth.recalibrated_batchnorm(model, batches):
        for (name, mine), theirs in zip(model.named_buffers(), expected.buffers()):
            torch.testing.assert_close(mine, theirs.to(mine.dtype), rtol=1e-6, atol=1e-6, msg=name)
        assert model.large_only.num_batches_tracked == 2 and model.never.num_batches_tracked == 0
