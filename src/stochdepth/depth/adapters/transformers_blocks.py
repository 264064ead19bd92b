"""Hugging Face transformers' decoder layers: the Llama-style layer (Llama, Qwen2, Qwen3, Mistral).

Each layer holds two pre-norm residual branches, attention and MLP, gated like timm's ViT
blocks (LayerDrop that really skips). Keys do not change, evaluation is the original layer's
computation (generation with a KV cache included), and :func:`~stochdepth.fold_survival`
gives back the original classes. Written against transformers 5, whose layers return the
hidden states and take the cache as ``cache``.

Batch mode passes on whatever the layer is called with (attention mask, position embeddings,
cache). Sample and subset mode would have to gather each row's mask and position embeddings
with the rows; they are refused in training, in one line.
"""

from __future__ import annotations

import torch
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.qwen3 import modeling_qwen3

from stochdepth.depth.adapters import NormedTwoBranchBlock
from stochdepth.depth.schedule import ROW_MODES


class LlamaStyleDecoderLayer(NormedTwoBranchBlock):
    """``x + attention(input_layernorm(x))``, then ``+ mlp(post_attention_layernorm(...))``."""

    branch_attributes = (("input_layernorm", "self_attn"), ("post_attention_layernorm", "mlp"))

    def forward(self, hidden_states: torch.Tensor, **options: object) -> torch.Tensor:
        if self.training and self.gates.drop_mode in ROW_MODES:
            raise ValueError(
                f"{self.gates.drop_mode} mode cannot gather a decoder layer's attention mask and position "
                "embeddings with its rows; use drop_mode='batch'"
            )
        return self.two_branches(hidden_states, **options)

    def attention_branch(self, x: torch.Tensor, **options: object) -> torch.Tensor:
        return self.self_attn(hidden_states=self.input_layernorm(x), **options)[0]

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.post_attention_layernorm(x))

    def branch_ends(self) -> list[torch.nn.Module]:
        return [self.self_attn.o_proj, self.mlp.down_proj]


class LlamaLayer(LlamaStyleDecoderLayer, modeling_llama.LlamaDecoderLayer):
    plain_class = modeling_llama.LlamaDecoderLayer


class MistralLayer(LlamaStyleDecoderLayer, modeling_mistral.MistralDecoderLayer):
    plain_class = modeling_mistral.MistralDecoderLayer


class Qwen2Layer(LlamaStyleDecoderLayer, modeling_qwen2.Qwen2DecoderLayer):
    plain_class = modeling_qwen2.Qwen2DecoderLayer


class Qwen3Layer(LlamaStyleDecoderLayer, modeling_qwen3.Qwen3DecoderLayer):
    plain_class = modeling_qwen3.Qwen3DecoderLayer


ADAPTED = (LlamaLayer, MistralLayer, Qwen2Layer, Qwen3Layer)
