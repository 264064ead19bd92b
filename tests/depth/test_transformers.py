"""Hugging Face decoder layers made stochastic: keys, evaluation and generation unchanged, and real skipping."""

from __future__ import annotations

import copy

import pytest
import torch

import stochdepth
from stochdepth.depth import stochastic_blocks
from tests.depth.user_loops import TINY_DECODER
from tests.helpers import assert_same_outputs_and_gradients, replayed_gates

transformers = pytest.importorskip("transformers", minversion="5")

TINY_GPT2 = {"vocab_size": 64, "n_embd": 32, "n_layer": 3, "n_head": 2, "n_positions": 64, "resid_pdrop": 0.0}
TINY_GPT2 |= {"embd_pdrop": 0.0, "attn_pdrop": 0.0}  # no dropout: training steps compare exactly
FAMILIES = ["Llama", "Mistral", "Qwen2", "Qwen3", "GPT2"]


def _tiny(family: str = "Llama") -> torch.nn.Module:
    torch.manual_seed(0)
    config = getattr(transformers, f"{family}Config")(**(TINY_GPT2 if family == "GPT2" else TINY_DECODER))
    return getattr(transformers, f"{family}LMHeadModel" if family == "GPT2" else f"{family}ForCausalLM")(config).eval()


def _layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    return model.transformer.h if hasattr(model, "transformer") else model.model.layers


def _branches(layer: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    return (layer.attn, layer.mlp) if hasattr(layer, "attn") else (layer.self_attn, layer.mlp)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_converted_decoder_keeps_its_keys_evaluation_and_generation_and_folds_back(family):
    plain = _tiny(family)
    converted = stochdepth.stochastic_depth(copy.deepcopy(plain), final_survival_prob=0.5, gate_seed=1).eval()
    assert len(stochdepth.survival_probs(converted)) == 2 * TINY_DECODER["num_hidden_layers"], "attention and MLP each"
    assert converted.state_dict().keys() == plain.state_dict().keys()
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, plain(ids).logits)
        generated = converted.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
        assert torch.equal(
            generated, plain.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
        )
        folded = stochdepth.fold_survival(converted)
        assert {type(layer) for layer in _layers(folded)} == {type(_layers(plain)[0])}
        assert torch.equal(folded(ids).logits, plain(ids).logits)


@pytest.mark.parametrize("family", ["Llama", "GPT2"])
def test_a_dropped_branch_does_not_run_and_its_parameters_get_exact_zero_gradients(family):
    model = stochdepth.stochastic_depth(_tiny(family), final_survival_prob=0.3, gate_seed=3).train()
    calls = []
    for index, layer in enumerate(_layers(model)):
        for which, branch in enumerate(_branches(layer)):
            branch.register_forward_hook(lambda *_, index=index, which=which: calls.append((index, which)))
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(4))
    gates = stochdepth.gate_generator(model)
    dropped_seen = 0
    for _ in range(8):
        calls.clear()
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        survives = gates.step.survives
        assert sorted(calls) == [(i // 2, i % 2) for i, runs in enumerate(survives) if runs]
        for block in stochastic_blocks(model):
            for which in range(2):
                if not survives[block.first_index + which]:
                    dropped_seen += 1
                    assert all(not param.grad.any() for param in block.branch_parameters(which))
    assert dropped_seen > 0


@pytest.mark.parametrize("family", ["Llama", "GPT2"])
def test_gradient_checkpointing_recomputes_with_the_gates_the_forward_used(family):
    plain = stochdepth.stochastic_depth(_tiny(family), final_survival_prob=0.4, gate_seed=5).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.gradient_checkpointing_enable()
    checkpointed.train()
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(6))
    runs = {id(model): 0 for model in (plain, checkpointed)}
    for model in (plain, checkpointed):  # counted in forward itself: module hooks do not fire in a recomputation
        for layer in _layers(model):
            layer.mlp.forward = _counting(layer.mlp.forward, runs, id(model))
    for _ in range(4):
        grads = []
        for model in (plain, checkpointed):
            model.zero_grad()
            model(ids, labels=ids).loss.backward()
            grads.append({name: param.grad.clone() for name, param in model.named_parameters()})
        for name, grad in grads[0].items():
            torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6)
    assert runs[id(checkpointed)] > runs[id(plain)] > 0, "the checkpointed layers ran again in backward"


def _counting(forward, runs: dict[int, int], key: int):
    def counted(*args, **kwargs):
        runs[key] += 1
        return forward(*args, **kwargs)

    return counted


class _ReplayedGate(torch.nn.Module):
    """A branch whose output is multiplied per row by the next replayed (mask, scale): what sample mode computes."""

    def __init__(self, branch: torch.nn.Module, replay: list[tuple[torch.Tensor, float]]) -> None:
        super().__init__()
        self.branch, self.replay = branch, replay

    def forward(self, *args, **kwargs):
        mask, scale = self.replay.pop(0)
        out = self.branch(*args, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        gated = first * mask.view(-1, 1, 1) * scale
        return (gated, *out[1:]) if isinstance(out, tuple) else gated


@pytest.mark.parametrize("family", ["Llama", "GPT2"])
@pytest.mark.parametrize("drop_mode", ["batch", "sample", "subset"])
def test_each_mode_equals_the_plain_model_with_the_same_gates_multiplied_in(family, drop_mode):
    """Left-padded rows of different lengths, per-row position ids: the converted model skips (sample and
    subset mode: runs each branch on the surviving rows only, each row's mask and positions gathered
    with it), and equals the plain model whose branches are multiplied by the same row masks and
    scales (outputs and gradients). A mask or position row given to the wrong sample would change the
    padded rows' results."""
    plain = _tiny(family).train()
    model = stochdepth.stochastic_depth(copy.deepcopy(plain), final_survival_prob=0.4, drop_mode=drop_mode, gate_seed=8)
    model.train()
    batch = 6
    ids = torch.randint(1, 64, (batch, 9), generator=torch.Generator().manual_seed(9))
    mask = torch.ones_like(ids)
    for row, padding in enumerate([0, 3, 1, 5, 0, 2]):
        mask[row, :padding] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
    output = model(**inputs).logits
    output.square().sum().backward()
    replay = replayed_gates(model, batch)
    for layer in _layers(plain):
        attention, mlp = _branches(layer)
        for name, branch in (("attn" if hasattr(layer, "attn") else "self_attn", attention), ("mlp", mlp)):
            setattr(layer, name, _ReplayedGate(branch, replay))
    expected = plain(**inputs).logits
    expected.square().sum().backward()
    assert not replay, "every branch ran once"
    assert_same_outputs_and_gradients(output, expected, model, plain)


def test_row_modes_refuse_a_cache_holding_earlier_tokens_in_one_line():
    model = stochdepth.stochastic_depth(_tiny(), drop_mode="sample").eval()
    ids = torch.randint(0, 64, (4, 8))
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
    model.train()
    with pytest.raises(ValueError, match="sample mode cannot gather the rows of a cache holding earlier tokens"):
        model(ids[:, :2], cache=cache)


class _GateChecks(transformers.TrainerCallback):
    """Before each optimizer step of the ``Trainer``: the branches dropped in that step have exact zero gradients."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.dropped, self.steps = model, 0, 0

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        survives = stochdepth.gate_generator(self.model).step.survives
        self.steps += 1
        for block in stochastic_blocks(self.model):
            for which in range(2):
                if not survives[block.first_index + which]:
                    self.dropped += 1
                    assert all(not param.grad.any() for param in block.branch_parameters(which))


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_the_hugging_face_trainer_trains_a_converted_model_with_real_skipping(gradient_checkpointing, tmp_path):
    pytest.importorskip("accelerate")
    model = stochdepth.stochastic_depth(
        _tiny(), final_survival_prob=0.3, time_schedule="ramp", time_schedule_fraction=0.5, total_steps=8, gate_seed=4
    )
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    texts = torch.randint(0, 64, (32, 12), generator=torch.Generator().manual_seed(5))
    data = [{"input_ids": row, "labels": row} for row in texts]
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        gradient_checkpointing=gradient_checkpointing,
        disable_tqdm=True,
    )
    checks = _GateChecks(model)
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=data, callbacks=[checks])
    trainer.train()
    gates = stochdepth.gate_generator(model)
    assert checks.steps == 8 and gates.steps_taken == 8, "one gate draw per training step, recomputation included"
    assert checks.dropped > 0, "the ramp reached dropping rates and branches were skipped"
    assert stochdepth.survival_probs_in_force(model) == pytest.approx(stochdepth.survival_probs(model))
    assert all(not torch.equal(value, before[name]) for name, value in model.named_parameters() if "layers" in name)


def test_gpt2_blocks_with_cross_attention_are_left_plain_and_named():
    config = transformers.GPT2Config(**TINY_GPT2, add_cross_attention=True)
    with pytest.raises(ValueError, match=r"found GPT2Block \(not recognised\)"):
        stochdepth.stochastic_depth(transformers.GPT2LMHeadModel(config))
