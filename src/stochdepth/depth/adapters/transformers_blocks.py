"""Hugging Face transformers' decoder layers: the Llama-style layer (Llama, Qwen2, Qwen3, Mistral) and GPT-2's block.

Each layer holds two pre-norm residual branches, attention and MLP, gated like timm's ViT
blocks (LayerDrop that really skips). Keys do not change, evaluation is the original layer's
computation (generation with a KV cache included), and :func:`~stochdepth.fold_survival`
gives back the original classes. Written against transformers 5, whose layers return the
hidden states.

A layer's call is bound to the original ``forward``'s signature, so every argument reaches
the attention as the original passes it, under whatever name the installed transformers
gives it (the cache is ``cache`` in 5.25, ``past_key_values`` in earlier releases). In sample and
subset mode the per-row arguments (attention mask, position ids, position embeddings) are
gathered with the surviving rows; a cache is left out of the gathered call while it is empty
(training's cache, which nothing reads), and one that holds earlier tokens, a flex-attention
``BlockMask`` or packed-sequence arguments are refused in one line.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn
from transformers.models.gpt2 import modeling_gpt2
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.qwen3 import modeling_qwen3

from stochdepth.depth.adapters import NormedTwoBranchBlock
from stochdepth.depth.schedule import ROW_MODES

PER_ROW_ARGUMENTS = ("attention_mask", "position_ids", "position_embeddings")
"""Arguments with one entry per sample (or one for the whole batch), gathered with the rows."""
CACHE_ARGUMENTS = ("cache", "past_key_values", "layer_past")
PACKED_SEQUENCE_ARGUMENTS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


@functools.cache
def _signature(forward: object) -> inspect.Signature:
    return inspect.signature(forward)


class DecoderLayer(NormedTwoBranchBlock):
    """A decoder layer's two branches; subclasses name the norm, attention and MLP of each."""

    def gated_layer(self, *args: object, **kwargs: object) -> torch.Tensor:
        """The layer's residual sums, called as the original ``forward`` is."""
        signature = _signature(self.plain_class.forward)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        options = dict(bound.arguments)
        options.update(options.pop("kwargs", {}))
        _, input_name = list(signature.parameters)[:2]
        del options["self"]
        hidden_states = options.pop(input_name)
        if options.pop("encoder_hidden_states", None) is not None:
            raise ValueError(f"{type(self).__name__} was converted without cross-attention; it takes no encoder states")
        per_row = {name: options.pop(name) for name in PER_ROW_ARGUMENTS if options.get(name) is not None}
        if self.training and self.gates.drop_mode in ROW_MODES:
            options = self._options_for_rows(options)
        return self.two_branches(hidden_states, per_row, **options)

    def _options_for_rows(self, options: dict[str, object]) -> dict[str, object]:
        """``options`` with an empty cache left out; a ``ValueError`` for what cannot be split by rows."""
        mode = self.gates.drop_mode
        for name in PACKED_SEQUENCE_ARGUMENTS:
            if options.get(name) is not None:
                raise ValueError(f"{mode} mode cannot split packed sequences ({name}) by rows; use drop_mode='batch'")
        for name in CACHE_ARGUMENTS:
            cache = options.get(name)
            if cache is not None and cache.get_seq_length() > 0:
                raise ValueError(
                    f"{mode} mode cannot gather the rows of a cache holding earlier tokens; use drop_mode='batch'"
                )
            options.pop(name, None)
        return options


class LlamaStyleDecoderLayer(DecoderLayer):
    """``x + attention(input_layernorm(x))``, then ``+ mlp(post_attention_layernorm(...))``."""

    branch_attributes = (("input_layernorm", "self_attn"), ("post_attention_layernorm", "mlp"))

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.gated_layer(*args, **kwargs)

    def attention_branch(self, x: torch.Tensor, **options: object) -> torch.Tensor:
        return self.self_attn(hidden_states=self.input_layernorm(x), **options)[0]

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.post_attention_layernorm(x))

    def branch_ends(self) -> list[nn.Module]:
        return [self.self_attn.o_proj, self.mlp.down_proj]


class LlamaLayer(LlamaStyleDecoderLayer, modeling_llama.LlamaDecoderLayer):
    plain_class = modeling_llama.LlamaDecoderLayer


class MistralLayer(LlamaStyleDecoderLayer, modeling_mistral.MistralDecoderLayer):
    plain_class = modeling_mistral.MistralDecoderLayer


class Qwen2Layer(LlamaStyleDecoderLayer, modeling_qwen2.Qwen2DecoderLayer):
    plain_class = modeling_qwen2.Qwen2DecoderLayer


class Qwen3Layer(LlamaStyleDecoderLayer, modeling_qwen3.Qwen3DecoderLayer):
    plain_class = modeling_qwen3.Qwen3DecoderLayer


class GPT2Layer(DecoderLayer, modeling_gpt2.GPT2Block):
    """GPT-2's block: ``x + attn(ln_1(x))``, then ``+ mlp(ln_2(...))``, both ending in a ``Conv1D``.

    A block built with cross-attention (``add_cross_attention``, encoder-decoder use) has a third
    branch that runs only with encoder states; it is left plain.
    """

    plain_class = modeling_gpt2.GPT2Block
    branch_attributes = (("ln_1", "attn"), ("ln_2", "mlp"))

    @classmethod
    def count_branches(cls, block: nn.Module) -> int:
        return 0 if hasattr(block, "crossattention") else 2

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.gated_layer(*args, **kwargs)

    def attention_branch(self, x: torch.Tensor, **options: object) -> torch.Tensor:
        return self.attn(self.ln_1(x), **options)[0]

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_2(x))

    def branch_ends(self) -> list[tuple[nn.Parameter, ...]]:
        return [(self.attn.c_proj.weight, self.attn.c_proj.bias), (self.mlp.c_proj.weight, self.mlp.c_proj.bias)]


ADAPTED = (LlamaLayer, MistralLayer, Qwen2Layer, Qwen3Layer, GPT2Layer)
