"""Hugging Face decoder layers made stochastic: keys, evaluation and generation unchanged, and real skipping."""

from __future__ import annotations

import copy

import pytest
import torch

import stochdepth
from stochdepth.depth import stochastic_blocks

transformers = pytest.importorskip("transformers", minversion="5")

TINY = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


def _tiny(family: str = "Llama") -> torch.nn.Module:
    torch.manual_seed(0)
    config = getattr(transformers, f"{family}Config")(**TINY)
    return getattr(transformers, f"{family}ForCausalLM")(config).eval()


@pytest.mark.parametrize("family", ["Llama", "Mistral", "Qwen2", "Qwen3"])
def test_a_converted_decoder_keeps_its_keys_evaluation_and_generation_and_folds_back(family):
    plain = _tiny(family)
    converted = stochdepth.stochastic_depth(copy.deepcopy(plain), final_survival_prob=0.5, gate_seed=1).eval()
    assert len(stochdepth.survival_probs(converted)) == 2 * TINY["num_hidden_layers"], "attention and MLP each"
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
        assert {type(layer) for layer in folded.model.layers} == {type(plain.model.layers[0])}
        assert torch.equal(folded(ids).logits, plain(ids).logits)


def test_a_dropped_branch_does_not_run_and_its_parameters_get_exact_zero_gradients():
    model = stochdepth.stochastic_depth(_tiny(), final_survival_prob=0.3, gate_seed=3).train()
    calls = []
    for index, layer in enumerate(model.model.layers):
        layer.self_attn.register_forward_hook(lambda *_, index=index: calls.append((index, 0)))
        layer.mlp.register_forward_hook(lambda *_, index=index: calls.append((index, 1)))
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


def test_gradient_checkpointing_recomputes_with_the_gates_the_forward_used():
    plain = stochdepth.stochastic_depth(_tiny(), final_survival_prob=0.4, gate_seed=5).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.gradient_checkpointing_enable()
    checkpointed.train()
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(6))
    runs = {id(model): 0 for model in (plain, checkpointed)}
    for model in (plain, checkpointed):  # counted in forward itself: module hooks do not fire in a recomputation
        for layer in model.model.layers:
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


@pytest.mark.parametrize("drop_mode", ["sample", "subset"])
def test_row_modes_are_refused_in_training_with_one_line(drop_mode):
    model = stochdepth.stochastic_depth(_tiny(), drop_mode=drop_mode).train()
    ids = torch.randint(0, 64, (4, 8))
    with pytest.raises(ValueError, match=f"{drop_mode} mode cannot gather a decoder layer's attention mask"):
        model(ids)
