"""A converted network inside the stacks users train with: their own loop, DDP, checkpointing, pickling, compile."""

from __future__ import annotations

import copy
import functools
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torchvision
from torch import nn
from torch.utils.checkpoint import checkpoint

import stochdepth
from stochdepth.depth import stochastic_blocks
from tests.depth.user_loops import (
    fsdp2_against_ddp_loop,
    plain_ddp_loop,
    recalibrating_ddp_loop,
    small_resnet,
    tiny_llama,
    train_mode_forward,
)
from tests.train.distributed_ranks import run_ranks


@pytest.mark.parametrize(
    ("drop_mode", "final_survival_prob", "find_unused_parameters", "native", "convert_first"),
    [
        ("batch", 0.5, False, False, False),
        ("sample", 0.15, False, False, False),
        ("batch", 0.5, True, False, False),
        ("batch", 0.2, False, True, False),
        ("sample", 0.2, False, True, False),
        ("batch", 0.5, False, False, True),
        ("subset", 0.3, False, False, True),
    ],
)
def test_ddp_in_a_users_loop_trains_with_dropped_blocks_and_ranks_seeded_differently(
    drop_mode, final_survival_prob, find_unused_parameters, native, convert_first, tmp_path
):
    """Default DDP, the usual workaround users may already have (find_unused_parameters=True), a timm
    ViT built with its own drop path (``native``: the conversion takes its rates over), and a network
    converted before the process group exists (``convert_first``, Lightning's order: rank 0's gate
    state is taken at the first training step)."""
    if native:
        pytest.importorskip("timm")
    job = functools.partial(
        plain_ddp_loop,
        drop_mode=drop_mode,
        final_survival_prob=final_survival_prob,
        find_unused_parameters=find_unused_parameters,
        native=native,
        convert_first=convert_first,
    )
    ranks = run_ranks(job, tmp_path)
    assert all("error" not in rank for rank in ranks), [rank.get("traceback") for rank in ranks]
    first, second = ranks
    assert first["seed"] == second["seed"], "the gate seed is taken from rank 0"
    decayed, idle_on_one_rank = 0, 0
    for one, other in zip(first["steps"], second["steps"]):
        assert one["runs_anywhere"] == other["runs_anywhere"]
        if drop_mode == "batch":
            assert one["survives"] == other["survives"]
        idle_on_one_rank += sum(mine != theirs for mine, theirs in zip(one["survives"], other["survives"]))
        for name, value in one["after"].items():
            assert torch.equal(value, other["after"][name]), f"{name} differs across ranks"
        for block, runs in enumerate(one["runs_anywhere"]):
            if not runs and not native:
                name = f"layer{block + 1}.0.conv1.weight"
                moved = one["after"][name] - one["before"][name]
                assert moved.abs().sum() > 0, "weight decay moves a dropped block"
                decayed += 1
    dropped = sum(not runs for step in first["steps"] for runs in step["runs_anywhere"])
    if native and drop_mode == "batch":
        assert dropped > 0, "the ViT's own rates (up to 0.8) dropped no branch in 6 steps"
    elif drop_mode == "batch":
        assert decayed > 0, "no block was dropped in 6 steps"
    elif drop_mode == "sample":
        assert idle_on_one_rank > 0, "no block ran on one rank's rows only (the case DDP would fail on)"


def _checkpointed_stages(model: nn.Module, use_reentrant: bool) -> nn.Module:
    """``model`` whose residual blocks run under ``torch.utils.checkpoint`` (recomputed in backward)."""

    class Checkpointed(nn.Module):
        def __init__(self, blocks: nn.Sequential) -> None:
            super().__init__()
            self.inner = blocks

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.inner:
                x = checkpoint(block, x, use_reentrant=use_reentrant)
            return x

    model.blocks = Checkpointed(model.blocks)
    return model


def _gradients(model: nn.Module, x: torch.Tensor, steps: int) -> list[dict[str, torch.Tensor]]:
    grads = []
    for _ in range(steps):
        model.zero_grad()
        model(x).square().mean().backward()
        grads.append({name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None})
    return grads


@pytest.mark.parametrize("use_reentrant", [True, False])
@pytest.mark.parametrize("drop_mode", ["batch", "sample"])
def test_activation_checkpointing_recomputes_with_the_gates_the_forward_used(use_reentrant, drop_mode):
    plain = stochdepth.create_model("resnet20", final_survival_prob=0.3, drop_mode=drop_mode, gate_seed=5).train()
    checkpointed = _checkpointed_stages(copy.deepcopy(plain), use_reentrant)
    x = torch.randn(6, 3, 16, 16, requires_grad=use_reentrant)
    expected, measured = _gradients(plain, x, 5), _gradients(checkpointed, x, 5)
    for one, other in zip(expected, measured):
        assert one.keys() == {name.replace("blocks.inner.", "blocks.") for name in other}
        for name, grad in other.items():
            torch.testing.assert_close(grad, one[name.replace("blocks.inner.", "blocks.")], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_recalibrated_batchnorm_through_checkpointed_blocks_gives_the_plain_networks_statistics(use_reentrant):
    torch.manual_seed(0)
    plain = stochdepth.create_model("resnet20", final_survival_prob=0.3, gate_seed=2)
    checkpointed = _checkpointed_stages(copy.deepcopy(plain), use_reentrant)
    batches = [torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(index)) for index in range(2)]
    with stochdepth.recalibrated_batchnorm(plain, batches), stochdepth.recalibrated_batchnorm(checkpointed, batches):
        recalibrated = dict(plain.named_buffers())
        for name, value in checkpointed.named_buffers():
            torch.testing.assert_close(value, recalibrated[name.replace("blocks.inner.", "blocks.")], msg=name)
        torch.testing.assert_close(checkpointed(batches[0]), plain(batches[0]))


@pytest.mark.parametrize("drop_mode", ["batch", "sample"])
def test_timm_gradient_checkpointing_gives_the_gradients_of_the_plain_run(drop_mode):
    vit = pytest.importorskip("timm.models.vision_transformer")
    torch.manual_seed(0)
    network = vit.VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=5)
    plain = stochdepth.stochastic_depth(network, final_survival_prob=0.4, drop_mode=drop_mode, gate_seed=3).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 16, 16)
    for one, other in zip(_gradients(plain, x, 5), _gradients(checkpointed, x, 5)):
        assert one.keys() == other.keys()
        for name, grad in one.items():
            torch.testing.assert_close(other[name], grad, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_and_an_eval_copy_do_not_shift_the_gate_sequence():
    model = stochdepth.create_model("resnet20", final_survival_prob=0.3, gate_seed=9).train()
    reference = copy.deepcopy(model)
    teacher = copy.deepcopy(model).eval()
    x = torch.randn(2, 3, 8, 8)
    sequence, expected = [], []
    for _ in range(6):
        for micro_batch in x.split(1):
            model(micro_batch).sum().backward()
            sequence.append(stochdepth.gate_generator(model).step.survives)
            with torch.no_grad():
                teacher(micro_batch)
        for micro_batch in x.split(1):
            reference(micro_batch)
            expected.append(stochdepth.gate_generator(reference).step.survives)
    assert sequence == expected
    assert len({tuple(gates) for gates in sequence}) > 1


def test_a_converted_torchvision_network_pickles_whole_and_crosses_torch_multiprocessing(tmp_path):
    model = stochdepth.stochastic_depth(small_resnet(), final_survival_prob=0.5, gate_seed=4)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert [type(block) for block in stochastic_blocks(loaded)] == [type(block) for block in stochastic_blocks(model)]
    assert all(block.gates is loaded.gate_generator for block in stochastic_blocks(loaded))
    x = torch.randn(2, 3, 32, 32)
    model.train()
    loaded.train()
    torch.testing.assert_close(loaded(x), model(x))
    assert loaded.gate_generator.step.survives == model.gate_generator.step.survives
    out = tmp_path / "child.pt"
    context = mp.get_context("spawn")
    child = context.Process(target=train_mode_forward, args=(model, str(out)))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert torch.load(out)["shape"] == (2, 4)


def test_the_gate_seed_follows_torch_manual_seed_unless_given():
    def gates_after(seed: int, **options: object) -> list[list[bool]]:
        torch.manual_seed(seed)
        model = stochdepth.create_model("resnet20", final_survival_prob=0.3, **options).train()
        draws = []
        for _ in range(10):
            model(torch.randn(1, 3, 8, 8))
            draws.append(stochdepth.gate_generator(model).step.survives)
        return draws

    assert gates_after(1) == gates_after(1)
    assert gates_after(1) != gates_after(2)
    assert gates_after(1, gate_seed=7) == gates_after(2, gate_seed=7)


def test_update_bn_under_run_every_block_recalibrates_every_batchnorm():
    model = stochdepth.create_model("resnet20", final_survival_prob=0.05, gate_seed=1)
    loader = [torch.randn(8, 3, 8, 8) for _ in range(3)]

    def at_reset(model: nn.Module) -> int:
        return sum(
            bool(torch.equal(module.running_mean, torch.zeros_like(module.running_mean)))
            for module in model.modules()
            if isinstance(module, nn.BatchNorm2d)
        )

    dropped = copy.deepcopy(model)
    torch.optim.swa_utils.update_bn(loader, dropped)
    assert at_reset(dropped) > 0, "with blocks dropped, some BatchNorm layers see nothing"
    with stochdepth.run_every_block(model):
        torch.optim.swa_utils.update_bn(loader, model)
    assert at_reset(model) == 0
    swa = torch.optim.swa_utils.AveragedModel(copy.deepcopy(dropped))
    assert stochdepth.gate_generator(swa) is not stochdepth.gate_generator(dropped), "the copy has its own gates"
    with stochdepth.run_every_block(swa):
        torch.optim.swa_utils.update_bn(loader, swa)
    assert at_reset(swa) == 0, "an AveragedModel runs every block of the copy it holds"


def test_recalibrated_batchnorm_on_a_ddp_wrapper_in_a_users_loop_leaves_training_as_it_was(tmp_path):
    """An evaluation inside ``recalibrated_batchnorm(ddp, same batches on every rank)`` in the middle of a DDP loop."""
    ranks = run_ranks(recalibrating_ddp_loop, tmp_path)
    assert all("error" not in rank for rank in ranks), [rank.get("traceback") for rank in ranks]
    for rank in ranks:
        during = rank["during_evaluation"]
        for name, value in during["mine"].items():
            torch.testing.assert_close(value, during["update_bn"][name], rtol=1e-5, atol=1e-6, msg=name)
        for name, value in rank["with_evaluation"].items():
            assert torch.equal(value, rank["without"][name]), f"{name}: the evaluation changed training"
    for name, value in ranks[0]["during_evaluation"]["mine"].items():
        assert torch.equal(value, ranks[1]["during_evaluation"]["mine"][name]), f"{name} differs across ranks"


def test_run_every_block_contexts_nest_and_close_in_any_order_and_wrappers_find_their_network():
    model = stochdepth.create_model("resnet8", gate_seed=1)
    gates = stochdepth.gate_generator(nn.Sequential(model))
    assert gates is model.gate_generator
    first, second = stochdepth.run_every_block(model), stochdepth.run_every_block(nn.Sequential(model))
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gates.every_block, "the second context is still open"
    second.__exit__(None, None, None)
    assert not gates.every_block
    with pytest.raises(ValueError, match="2 converted networks"):
        stochdepth.gate_generator(nn.Sequential(model, stochdepth.create_model("resnet8")))
    with pytest.raises(ValueError, match="holds no converted network"), stochdepth.run_every_block(nn.Linear(2, 2)):
        pass


def _compile_counter() -> tuple[list[int], object]:
    compiled = []

    def backend(graph_module: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> object:
        compiled.append(1)
        return graph_module.forward

    return compiled, backend


class _Logits(nn.Module):
    """A causal language model called as users call it, on token ids with a left-padding mask: its logits."""

    def __init__(self, model: nn.Module, attention_mask: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.attention_mask = attention_mask

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=self.attention_mask).logits


def _compiled_network(source: str, drop_mode: str) -> tuple[nn.Module, torch.Tensor]:
    if source == "llama":
        pytest.importorskip("transformers", minversion="5")
        model = stochdepth.stochastic_depth(tiny_llama(), final_survival_prob=0.4, drop_mode=drop_mode, gate_seed=2)
        mask = torch.ones(6, 10, dtype=torch.long)
        mask[1, :3] = mask[4, :5] = 0
        return _Logits(model, mask), torch.randint(1, 64, (6, 10), generator=torch.Generator().manual_seed(1))
    if source == "library":
        return stochdepth.create_model("resnet110", final_survival_prob=0.4, drop_mode=drop_mode, gate_seed=2), (
            torch.randn(6, 3, 8, 8)
        )
    if source == "timm":
        vit = pytest.importorskip("timm.models.vision_transformer")
        network = vit.VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_classes=5)
        return stochdepth.stochastic_depth(network, final_survival_prob=0.4, drop_mode=drop_mode, gate_seed=2), (
            torch.randn(6, 3, 16, 16)
        )
    network = torchvision.models.resnet50(num_classes=5)
    return stochdepth.stochastic_depth(network, final_survival_prob=0.4, drop_mode=drop_mode, gate_seed=2), (
        torch.randn(6, 3, 32, 32)
    )


@pytest.mark.parametrize(
    ("source", "drop_mode"),
    [
        ("torchvision", "batch"),
        ("timm", "subset"),
        ("llama", "batch"),
        ("llama", "subset"),
        *(
            pytest.param(source, mode, marks=pytest.mark.slow)
            for source, mode in [
                ("llama", "sample"),
                ("torchvision", "sample"),
                ("torchvision", "subset"),
                ("library", "batch"),
                ("library", "sample"),
                ("library", "subset"),
                ("timm", "batch"),
                ("timm", "sample"),
            ]
        ),
    ],
)
def test_a_compiled_converted_network_skips_like_the_eager_one_at_dynamos_default_limits(drop_mode, source):
    """ResNet-110, torchvision's ResNet-50, a timm ViT and a Hugging Face Llama (a left-padded batch) at PyTorch's
    default settings: no recompile limit hit.

    The bound: a branch compiles once with static shapes; in sample mode once more on a subset of
    rows and once with a dynamic batch size. The frames outside the branches compile a few more.
    """
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager, x = _compiled_network(source, drop_mode)
    compiled_model = copy.deepcopy(eager).train()
    eager.train()
    graphs, backend = _compile_counter()
    compiled_model.compile(backend=backend)
    counts, patterns = [], set()
    for _ in range(10):
        expected, output = eager(x), compiled_model(x)
        torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-5)
        output.sum().backward()
        step = stochdepth.gate_generator(compiled_model).step
        patterns.add((tuple(step.survives), tuple(len(r) if r is not None else -1 for r in step.rows)))
        blocks = list(stochastic_blocks(compiled_model))
        for block in blocks:
            for which in range(len(block.survival_probs)):
                if not step.survives[block.first_index + which]:
                    assert all(not param.grad.any() for param in block.branch_parameters(which))
        compiled_model.zero_grad()
        counts.append(len(graphs))
    limit_hits = [reason for reason in counters["unimplemented"] if "recompile limit" in reason.lower()]
    assert not limit_hits, limit_hits
    assert len(patterns) > 3 or drop_mode == "subset", "the gates changed from step to step"
    branches = len(stochdepth.survival_probs(compiled_model))
    assert counts[-1] <= (3 if drop_mode == "sample" else 1) * branches + 12, f"graphs after each step: {counts}"
    if drop_mode == "subset":
        assert counts[-1] == counts[0], f"fixed subsets compile nothing after the first step: {counts}"


@pytest.mark.skipif(torch._dynamo.config.specialize_float, reason="this PyTorch's dynamo makes every float a constant")
def test_compiled_evaluation_under_a_time_schedule_does_not_recompile_for_each_new_survival_prob():
    """A user's loop: a compiled network trains under a ramp (p_l changes every step) and is evaluated
    every 3 steps under the paper's scaling. Evaluation compiles on its first two calls at most."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    torch.manual_seed(0)
    net = stochdepth.create_model(
        "resnet8", final_survival_prob=0.5, time_schedule="ramp", time_schedule_fraction=1.0, total_steps=24
    )
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(net, backend=counter)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    compiles_in_evaluation, probs_seen = [], set()
    for _ in range(8):
        net.train()
        for _ in range(3):
            optimizer.zero_grad()
            compiled(x).square().mean().backward()
            optimizer.step()
        net.eval()
        probs_seen.add(stochdepth.survival_probs_in_force(net)[-1])
        before = counter.frame_count
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), net(x))
        compiles_in_evaluation.append(counter.frame_count - before)
    assert len(probs_seen) == 8
    assert compiles_in_evaluation[2:] == [0] * 6, compiles_in_evaluation


@pytest.mark.parametrize("source", ["library", "torchvision", "timm"])
def test_torch_export_of_a_converted_network_in_evaluation_equals_the_folded_network(source):
    eager, x = _compiled_network(source, "batch")
    eager.train()
    for _ in range(3):
        eager(x)
    eager.eval()
    folded = stochdepth.fold_survival(eager)
    for strict in (False, True):
        exported = torch.export.export(eager, (x,), strict=strict).module()
        torch.testing.assert_close(exported(x), eager(x))
        torch.testing.assert_close(exported(x), folded(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("drop_mode", [pytest.param("batch", marks=pytest.mark.slow), "sample"])
def test_lightning_ddp_strategy_trains_a_converted_network_with_no_change_to_the_users_code(drop_mode, tmp_path):
    pytest.importorskip("lightning")
    script = Path(__file__).with_name("lightning_ddp.py")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), drop_mode],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2))
    assert len(first["steps"]) == len(second["steps"]) == 6
    moved = 0
    for one, other in zip(first["steps"], second["steps"]):
        assert one["runs_anywhere"] == other["runs_anywhere"]
        assert all(torch.equal(mine, theirs) for mine, theirs in zip(one["conv1"], other["conv1"]))
    dropped_first = [not runs for runs in first["steps"][0]["runs_anywhere"]]
    for block, dropped in enumerate(dropped_first):
        if dropped:
            moved += not torch.equal(first["steps"][0]["conv1"][block], first["before"][block])
    assert moved == sum(dropped_first), "weight decay moves the blocks dropped in the first step"
    statistics = [rank["validation_statistics"] for rank in (first, second)]
    assert len(statistics[0]) == len(statistics[1]) == 2, "the sanity check and the epoch's validation"
    for mine, theirs in zip(*statistics):
        assert all(torch.equal(value, theirs[name]) for name, value in mine.items()), "recalibrated alike"
    trained = dict(first["trained_statistics"])
    assert any(not torch.equal(value, trained[name]) for name, value in statistics[0][1].items())


def test_a_loop_that_checkpoints_only_the_state_dict_resumes_the_gates_with_one_call():
    """timm's train.py and many loops save ``model.state_dict()`` alone."""

    def build() -> nn.Module:
        torch.manual_seed(0)
        net = stochdepth.create_model("resnet8", final_survival_prob=0.3, time_schedule="ramp", total_steps=8)
        return stochdepth.keep_gate_state_in_state_dict(net)

    def train(net: nn.Module, steps: int, optimizer_state: dict | None = None) -> torch.optim.Optimizer:
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        for _ in range(steps):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
        return optimizer

    straight = build()
    train(straight, 8)
    first = build()
    optimizer = train(first, 3)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert "stochdepth_gates._extra_state" in saved["model"]
    resumed = build()
    resumed.load_state_dict(saved["model"])
    assert stochdepth.gate_generator(resumed).steps_taken == 3
    train(resumed, 5, saved["optimizer"])
    for name, value in straight.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, resumed.state_dict()[name]), name
    assert "stochdepth_gates._extra_state" not in stochdepth.fold_survival(resumed).state_dict()


@pytest.mark.parametrize(
    ("network", "drop_mode"),
    [
        ("resnet", "batch"),
        pytest.param("resnet", "sample", marks=pytest.mark.slow),
        ("llama", "batch"),
        pytest.param("llama", "subset", marks=pytest.mark.slow),
    ],
)
def test_fsdp2_per_block_trains_like_ddp_with_the_same_gates(network, drop_mode, tmp_path):
    """Default DDP keeps the ranks' parameters identical after every step, and FSDP2 equals it bit for bit.

    ``llama``: a tiny Hugging Face Llama, ``fully_shard`` per decoder layer, left-padded batches.
    ``resnet``: ``recalibrated_batchnorm`` around an evaluation of each gives FSDP2 DDP's statistics
    and logits, and both their trained statistics back.
    """
    if network == "llama":
        pytest.importorskip("transformers", minversion="5")
    job = functools.partial(fsdp2_against_ddp_loop, drop_mode=drop_mode, network=network)
    ranks = run_ranks(job, tmp_path)
    assert all("error" not in rank for rank in ranks), [rank.get("traceback") for rank in ranks]
    dropped = 0
    for first, second in zip(ranks[0]["steps"], ranks[1]["steps"]):
        for name, value in first["ddp"].items():
            assert torch.equal(second["ddp"][name], value), f"{name} differs across ranks"
    for rank in ranks:
        for step in rank["steps"]:
            dropped += step["survives"].count(False) + step["on_some_rows"]
            for name, value in step["ddp"].items():
                torch.testing.assert_close(step["fsdp"][name], value, rtol=0, atol=0, msg=name)
    assert dropped > 0, "no branch was dropped (or ran on a subset of rows) in 4 steps"
    for rank in ranks if network == "resnet" else ():
        ddp, fsdp = rank["evaluations"]["ddp"], rank["evaluations"]["fsdp"]
        assert ddp["put_back"] and fsdp["put_back"] and ddp["changed"] and fsdp["changed"]
        torch.testing.assert_close(fsdp["logits"], ddp["logits"], rtol=1e-5, atol=1e-5)
        for name, value in ddp["statistics"].items():
            torch.testing.assert_close(fsdp["statistics"][name], value, rtol=1e-5, atol=1e-6, msg=name)
