"""Export the folded (deterministic, plain) network: safetensors, TorchScript, torch.export, ONNX.

Every format holds :func:`stochdepth.fold_survival`'s network: each p_l is already in the
weights, so inference costs what a plain ResNet costs. The graph formats (``torchscript``,
``exported``, ``onnx``) take raw images scaled to [0, 1]: the training data's normalisation
is inside the graph (:class:`RawImageClassifier`). ``safetensors`` holds the folded state dict
(keys as ``create_model(..., survival_rule="none")`` names them) with the data spec and the
model's name and build options in its metadata, so :func:`load_exported` rebuilds the same
classifier from the file alone. Every file is written with the same permissions (what the
process's umask allows, as for any new file).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from stochdepth.config import EXPORT_FORMATS
from stochdepth.data import DataSpec
from stochdepth.files import WriteFailed, write_atomically, write_path_atomically

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


def check_export_target(out: Path, source: Path, force: bool) -> None:
    """Refuse as an export target: a link, a folder, a path inside the source run, a file with other
    hard links, the source checkpoint, and an existing file unless ``force``."""
    if out.is_symlink():
        raise ValueError(f"{out} is a symbolic link; give a plain file path")
    if out.is_dir():
        raise ValueError(f"{out} is a folder; give a file path")
    run_folder = source if source.is_dir() else source.parent.parent
    if (source.is_dir() or (run_folder / "config.json").is_file()) and out.resolve().is_relative_to(
        run_folder.resolve()
    ):
        raise ValueError(f"{out} is inside the run folder {run_folder}; export somewhere else")
    if out.is_file() and out.stat().st_nlink > 1:
        raise ValueError(f"{out} has other hard links (it may be another file's content); give a new file path")
    if source.is_file() and out.resolve() == source.resolve():
        raise ValueError(f"{out} is the checkpoint being exported")
    if out.exists() and not force:
        raise ValueError(f"{out} exists; replace it with force=True")
    if not out.parent.is_dir():
        raise ValueError(f"cannot write {out}: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise ValueError(f"cannot write {out}: folder {out.parent} is not writable")


def export_model(
    folded: nn.Module,
    spec: DataSpec,
    path: str | Path,
    export_format: str,
    model_options: dict[str, object] | None = None,
) -> list[Path]:
    """Write ``folded`` (an eval-mode network from ``fold_survival``) to ``path``; returns every file written.

    The batch size stays dynamic (up to ``MAX_BATCH``) for ``exported`` and ``onnx``; the ONNX
    file is self-contained (no ``.data`` file beside it). ``model_options`` (``{"model": name,
    ...}``, the keyword arguments ``create_model`` built it with) go into the safetensors
    metadata for :func:`load_exported`.
    """
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {export_format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    folded = folded.eval()
    if export_format == "safetensors":
        from safetensors.torch import save

        tensors = {name: tensor.contiguous() for name, tensor in folded.state_dict().items()}
        metadata = {"data_spec": json.dumps(spec.as_dict())}
        if model_options is not None:
            metadata["model"] = json.dumps(model_options)
        _write_whole(path, lambda file: file.write(save(tensors, metadata=metadata)))
        return [path]
    classifier = RawImageClassifier(folded, spec).eval()
    example = torch.rand(2, spec.in_channels, spec.image_size, spec.image_size)
    with _quiet():
        if export_format == "torchscript":
            _write_whole(path, _in_memory(torch.jit.save, torch.jit.trace(classifier, example)))
        elif export_format == "exported":
            batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
            program = torch.export.export(classifier, (example,), dynamic_shapes=({0: batch},))
            _write_whole(path, _in_memory(torch.export.save, program))
        else:
            try:
                write_path_atomically(path, lambda temporary: _export_onnx(classifier, example, temporary))
            except WriteFailed as error:
                raise ValueError(str(error)) from None
            _default_permissions(path)
    return [path]


def _in_memory(save: Callable[[object, io.BytesIO], None], thing: object) -> Callable[[BinaryIO], None]:
    """Serialise ``thing`` into memory first (a full disk then fails in Python, not inside a C++ writer)."""
    buffer = io.BytesIO()
    save(thing, buffer)
    return lambda file: file.write(buffer.getvalue())


def _write_whole(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` whole or not at all, with a new file's usual permissions; one line on failure."""
    try:
        write_atomically(path, write)
    except WriteFailed as error:
        raise ValueError(str(error)) from None
    _default_permissions(path)


def _default_permissions(path: Path) -> None:
    """Give ``path`` a new file's usual permissions (0666 less the umask), whoever wrote it."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


EXPORTED_OPTIONS = {"dropout_rate": (0.0, 0.999)}
"""The build options an export records beside the model name, with their ranges (nothing else is read)."""


def load_exported(path: str | Path) -> RawImageClassifier:
    """The classifier a ``safetensors`` export holds, rebuilt from the file alone, in evaluation mode.

    It takes images scaled to [0, 1] (the training data's normalisation is inside, as in the
    graph formats) and returns logits; ``.network`` is the plain network (no stochastic parts:
    p_l is already in its weights). Nothing but tensors and JSON metadata is read: the model
    name is checked as any untrusted name is (``timm/hf-hub:...`` and paths are refused), and
    nothing is downloaded. A ``ValueError`` names what is missing or wrong.

        classifier = stochdepth.load_exported("model.safetensors")
        logits = classifier(images)  # images: N x C x H x W in [0, 1]
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from stochdepth.depth import fold_survival
    from stochdepth.models import check_weights, create_model

    path = Path(path)
    if not path.is_file():
        kind = "no such file" if not path.exists() else "not a regular file (a folder, device or pipe)"
        raise ValueError(f"{path}: {kind}")
    try:
        with safe_open(str(path), framework="pt") as source:
            metadata = source.metadata() or {}
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
    if "model" not in metadata or "data_spec" not in metadata:
        raise ValueError(f"{path}: no model name in its metadata (exported by an older stochdepth; export it again)")
    try:
        spec = DataSpec.from_dict(json.loads(metadata["data_spec"]))
        options = json.loads(metadata["model"])
        if not isinstance(options, dict) or not isinstance(options.get("model"), str):
            raise ValueError("model metadata must be an object with a 'model' name")
        name = options.pop("model")
        unknown = sorted(set(options) - set(EXPORTED_OPTIONS))
        if unknown:
            raise ValueError(f"unknown build option(s) {', '.join(map(repr, unknown))} in its metadata")
        for option, (low, high) in EXPORTED_OPTIONS.items():
            value = options.get(option)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError("build options must be numbers")
            if value is not None and not low <= value <= high:
                raise ValueError(f"build option {option} must be in [{low}, {high}], got {value!r}")

        def build() -> nn.Module:
            return create_model(
                name,
                num_classes=spec.num_classes,
                in_channels=spec.in_channels,
                image_size=spec.image_size,
                survival_rule="none",
                **options,
            )

        with torch.device("meta"):
            check_weights(build(), tensors, name)  # names and shapes first, nothing allocated: a file can't cost GBs
        network = build()
        check_weights(network, tensors, name)
    except (ValueError, TypeError, RuntimeError) as error:
        message = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: {message}") from None
    network.load_state_dict(tensors)
    return RawImageClassifier(fold_survival(network), spec).eval()


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
