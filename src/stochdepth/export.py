"""Export the folded (deterministic, plain) network: safetensors, TorchScript, torch.export, ONNX.

Every format holds :func:`stochdepth.fold_survival`'s network: each p_l is already in the
weights, so inference costs what a plain ResNet costs. The graph formats (``torchscript``,
``exported``, ``onnx``) take raw images scaled to [0, 1]: the training data's normalisation
is inside the graph (:class:`RawImageClassifier`). ``safetensors`` holds the folded state dict
(keys as ``create_model(..., survival_rule="none")`` names them) with the data spec in its
metadata.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from stochdepth.config import EXPORT_FORMATS
from stochdepth.data import DataSpec

MAX_BATCH = 4096


class RawImageClassifier(nn.Module):
    """``network((images - mean) / std)``: a classifier of images scaled to [0, 1], as a user has them."""

    def __init__(self, network: nn.Module, spec: DataSpec) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network((images - self.mean) / self.std)


@contextlib.contextmanager
def _quiet() -> contextlib.AbstractContextManager:
    """Keep the exporters' own warnings and progress prints out of the user's terminal."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def export_model(folded: nn.Module, spec: DataSpec, path: str | Path, export_format: str) -> list[Path]:
    """Write ``folded`` (an eval-mode network from ``fold_survival``) to ``path``; returns every file written.

    The batch size stays dynamic (up to ``MAX_BATCH``) for ``exported`` and ``onnx``; the ONNX
    file is self-contained (no ``.data`` file beside it).
    """
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {export_format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    folded = folded.eval()
    if export_format == "safetensors":
        from safetensors.torch import save_file

        tensors = {name: tensor.contiguous() for name, tensor in folded.state_dict().items()}
        save_file(tensors, str(path), metadata={"data_spec": json.dumps(spec.as_dict())})
        return [path]
    classifier = RawImageClassifier(folded, spec).eval()
    example = torch.rand(2, spec.in_channels, spec.image_size, spec.image_size)
    with _quiet():
        if export_format == "torchscript":
            torch.jit.save(torch.jit.trace(classifier, example), str(path))
        elif export_format == "exported":
            batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
            program = torch.export.export(classifier, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, str(path))
        else:
            _export_onnx(classifier, example, path)
    return [path]


def _export_onnx(classifier: nn.Module, example: torch.Tensor, path: Path) -> None:
    names = {"input_names": ["images"], "output_names": ["logits"]}
    parameters = inspect.signature(torch.onnx.export).parameters
    if "dynamic_shapes" in parameters:
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        extra = {"external_data": False} if "external_data" in parameters else {}
        torch.onnx.export(
            classifier, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},), **extra, **names
        )
    else:
        axes = {"images": {0: "batch"}, "logits": {0: "batch"}}
        torch.onnx.export(classifier, (example,), str(path), dynamic_axes=axes, **names)
