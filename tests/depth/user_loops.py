"""What users write around a converted network, run on spawned gloo ranks (spawned processes import this by name)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchvision.models import resnet as tv

import stochdepth
from stochdepth.depth import stochastic_blocks


def small_resnet(num_classes: int = 4) -> nn.Module:
    return tv.ResNet(tv.BasicBlock, [1, 1, 1, 1], num_classes=num_classes)


def native_rate_vit(drop_path_rate: float) -> nn.Module:
    """A small timm ViT built with its own drop path at ``drop_path_rate`` (the conversion takes it over)."""
    from timm.models import vision_transformer

    return vision_transformer.VisionTransformer(
        img_size=48, patch_size=16, embed_dim=32, depth=3, num_heads=2, num_classes=4, drop_path_rate=drop_path_rate
    )


def plain_ddp_loop(
    rank: int,
    out: Path,
    drop_mode: str,
    final_survival_prob: float,
    find_unused_parameters: bool = False,
    native: bool = False,
    convert_first: bool = False,
) -> dict[str, Any]:
    """timm's train.py order: join the group, seed each rank differently, build, convert, wrap in default DDP.

    ``native``: a timm ViT built with drop path rate 1 - ``final_survival_prob``, converted with its own schedule.
    ``convert_first``: Lightning's order instead, seed each rank differently, build and convert (with a ``ramp``
    time schedule over the 6 steps, so the ranks must agree on the step count too), then join.
    """
    timing = {"time_schedule": "ramp", "time_schedule_fraction": 0.5, "total_steps": 6} if convert_first else {}
    if not convert_first:
        dist.init_process_group("gloo")
    try:
        torch.manual_seed(100 + rank)
        if native:
            model = stochdepth.stochastic_depth(native_rate_vit(1 - final_survival_prob), drop_mode=drop_mode)
        else:
            model = stochdepth.stochastic_depth(
                small_resnet(),
                survival_rule="uniform",
                final_survival_prob=final_survival_prob,
                drop_mode=drop_mode,
                **timing,
            )
        if convert_first:
            dist.init_process_group("gloo")
        ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1)
        data = torch.Generator().manual_seed(rank)
        steps = []
        for _ in range(6):
            images, labels = torch.randn(4, 3, 48, 48, generator=data), torch.randint(0, 4, (4,), generator=data)
            before = {name: value.detach().clone() for name, value in model.named_parameters()}
            optimizer.zero_grad()
            nn.functional.cross_entropy(ddp(images), labels).backward()
            optimizer.step()
            step = stochdepth.gate_generator(model).step
            steps.append(
                {
                    "survives": list(step.survives),
                    "runs_anywhere": list(step.runs_anywhere),
                    "before": before,
                    "after": {name: value.detach().clone() for name, value in model.named_parameters()},
                }
            )
        return {"steps": steps, "seed": stochdepth.gate_generator(model).seed}
    finally:
        dist.destroy_process_group()


def recalibrating_ddp_loop(rank: int, out: Path) -> dict[str, Any]:
    """A default-DDP loop evaluating after step 2 inside ``recalibrated_batchnorm(ddp, ...)``, and one that does not.

    Ranks are seeded differently and train on their own batches; the recalibration batches are the
    same on both. Returns the statistics in force during the evaluation, what ``update_bn`` under
    ``run_every_block`` computes on a copy of the network, and both loops' final parameters and buffers.
    """
    dist.init_process_group("gloo")
    try:
        recalibration = [torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(50 + i)) for i in range(2)]
        finals, seen = [], {}
        for evaluate in (True, False):
            torch.manual_seed(100 + rank)
            model = stochdepth.stochastic_depth(small_resnet(), final_survival_prob=0.3)
            ddp = nn.parallel.DistributedDataParallel(model)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            data = torch.Generator().manual_seed(rank)
            for step in range(4):
                images, labels = torch.randn(4, 3, 32, 32, generator=data), torch.randint(0, 4, (4,), generator=data)
                optimizer.zero_grad()
                nn.functional.cross_entropy(ddp(images), labels).backward()
                optimizer.step()
                if evaluate and step == 1:
                    expected = copy.deepcopy(model)
                    with stochdepth.run_every_block(expected):
                        torch.optim.swa_utils.update_bn(recalibration, expected)
                    with stochdepth.recalibrated_batchnorm(ddp, recalibration):
                        ddp(recalibration[0])
                        seen = {
                            key: {name: value.clone() for name, value in network.named_buffers()}
                            for key, network in (("mine", model), ("update_bn", expected))
                        }
            finals.append({name: value.detach().clone() for name, value in model.state_dict().items()})
        return {"during_evaluation": seen, "with_evaluation": finals[0], "without": finals[1]}
    finally:
        dist.destroy_process_group()


def train_mode_forward(model: nn.Module, out: str) -> None:
    """Run by ``torch.multiprocessing.spawn`` with a converted network as its argument."""
    model.train()
    output = model(torch.randn(2, 3, 32, 32))
    output.sum().backward()
    torch.save({"shape": tuple(output.shape), "steps": stochdepth.gate_generator(model).step is not None}, out)


def _converted_resnet(drop_mode: str) -> nn.Module:
    torch.manual_seed(0)
    return stochdepth.stochastic_depth(
        small_resnet(), survival_rule="uniform", final_survival_prob=0.4, drop_mode=drop_mode, gate_seed=7
    )


def _resnet_batch(data: torch.Generator) -> dict[str, torch.Tensor]:
    return {"images": torch.randn(4, 3, 32, 32, generator=data), "labels": torch.randint(0, 4, (4,), generator=data)}


def _resnet_loss(network: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(network(batch["images"]), batch["labels"])


TINY_DECODER = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
"""A Llama-style configuration of 3 decoder layers (Llama, Mistral, Qwen2, Qwen3 take it alike)."""


def tiny_llama() -> nn.Module:
    """A tiny Llama with random weights (no download), the same on every rank."""
    import transformers

    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_DECODER))


def _converted_llama(drop_mode: str) -> nn.Module:
    return stochdepth.stochastic_depth(tiny_llama(), final_survival_prob=0.4, drop_mode=drop_mode, gate_seed=11)


def _text_batch(data: torch.Generator) -> dict[str, torch.Tensor]:
    """Token ids of 4 rows, each left-padded by 0 to 3 positions (an attention mask row per sample)."""
    ids = torch.randint(1, 64, (4, 10), generator=data)
    return {
        "input_ids": ids,
        "attention_mask": (torch.arange(10) >= torch.randint(0, 4, (4, 1), generator=data)).long(),
    }


def _language_model_loss(network: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return network(**batch, labels=batch["input_ids"]).loss


SHARDED_CASES = {
    "resnet": (_converted_resnet, stochastic_blocks, _resnet_batch, _resnet_loss),
    "llama": (_converted_llama, lambda model: model.model.layers, _text_batch, _language_model_loss),
}
"""Per network: the converted build, the modules ``fully_shard`` wraps, a batch and the loss."""


def fsdp2_against_ddp_loop(rank: int, out: Path, drop_mode: str, network: str = "resnet") -> dict[str, Any]:
    """The same converted network under FSDP2 (``fully_shard`` per block and on the root) and under DDP.

    ``network``: this library's ResNet-style torchvision network, or a tiny Llama (sharded per decoder
    layer). Both copies start from the same weights with the same gate seed and see the same batches;
    returns each copy's full parameters after every step. For the ResNet, each copy then evaluates
    inside ``recalibrated_batchnorm`` over the same two batches on both ranks: returned are the
    logits and statistics in force there, and whether the statistics were put back afterwards.
    """
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6 keeps it under _composable
        from torch.distributed._composable.fsdp import fully_shard

    build, shard_units, make_batch, loss_of = SHARDED_CASES[network]
    dist.init_process_group("gloo")
    try:
        ddp_model, fsdp_model = (build(drop_mode).train() for _ in range(2))
        for unit in shard_units(fsdp_model):
            fully_shard(unit)
        fully_shard(fsdp_model)
        ddp = nn.parallel.DistributedDataParallel(ddp_model)
        optimizers = [torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) for model in (ddp_model, fsdp_model)]
        data = torch.Generator().manual_seed(rank)
        steps = []
        for _ in range(4):
            batch = make_batch(data)
            for wrapped, optimizer in zip((ddp, fsdp_model), optimizers):
                optimizer.zero_grad()
                loss_of(wrapped, batch).backward()
                optimizer.step()
            steps.append(
                {
                    "survives": list(stochdepth.gate_generator(fsdp_model).step.survives),
                    "on_some_rows": sum(rows is not None for rows in stochdepth.gate_generator(fsdp_model).step.rows),
                    "ddp": {name: value.detach().clone() for name, value in ddp_model.named_parameters()},
                    "fsdp": {
                        name: value.full_tensor().detach().clone() for name, value in fsdp_model.named_parameters()
                    },
                }
            )
        evaluations = {}
        if network == "resnet":
            images = [_resnet_batch(torch.Generator().manual_seed(50 + index))["images"] for index in range(2)]
            for name, wrapped, model in (("ddp", ddp, ddp_model), ("fsdp", fsdp_model, fsdp_model)):
                trained = {key: value.clone() for key, value in model.named_buffers()}
                with stochdepth.recalibrated_batchnorm(wrapped, images), torch.no_grad():
                    logits = wrapped(images[0])
                    statistics = {key: value.clone() for key, value in model.named_buffers()}
                put_back = all(torch.equal(value, trained[key]) for key, value in model.named_buffers())
                changed = any(not torch.equal(value, trained[key]) for key, value in statistics.items())
                evaluations[name] = {
                    "logits": logits,
                    "statistics": statistics,
                    "put_back": put_back,
                    "changed": changed,
                }
        return {"steps": steps, "evaluations": evaluations}
    finally:
        dist.destroy_process_group()
