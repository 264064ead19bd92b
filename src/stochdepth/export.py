"""Export the folded (deterministic, plain) network: safetensors, TorchScript, torch.export, ONNX.

Every format holds :func:`stochdepth.fold_survival`'s network: each p_l is already in
the weights, so inference costs what a plain ResNet costs.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

EXPORT_FORMATS = ("safetensors", "torchscript", "exported", "onnx")


def export_model(folded: nn.Module, example: torch.Tensor, path: str | Path, export_format: str) -> Path:
    """Write ``folded`` (an eval-mode network from ``fold_survival``) to ``path`` in ``export_format``.

    ``example`` is an input batch used to trace the graph (its batch size stays dynamic for
    ``exported`` and ``onnx``). ``safetensors`` holds the folded state dict only; build the
    architecture with ``create_model(..., survival_rule="none")`` to load it.
    """
    path = Path(path)
    folded = folded.eval()
    if export_format == "safetensors":
        from safetensors.torch import save_file

        save_file({name: tensor.contiguous() for name, tensor in folded.state_dict().items()}, str(path))
    elif export_format == "torchscript":
        torch.jit.save(torch.jit.trace(folded, example), str(path))
    elif export_format == "exported":
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(folded, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
    elif export_format == "onnx":
        names = {"input_names": ["images"], "output_names": ["logits"]}
        if "dynamic_shapes" in inspect.signature(torch.onnx.export).parameters:
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(folded, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},), **names)
        else:
            axes = {"images": {0: "batch"}, "logits": {0: "batch"}}
            torch.onnx.export(folded, (example,), str(path), dynamic_axes=axes, **names)
    else:
        raise ValueError(f"unknown export format {export_format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    return path
