"""The model registry: ``@register_model`` builders, ``create_model`` (the one build path) and ``list_models``.

A family's builder returns a *plain* network that declares its residual blocks; it never
applies stochastic depth. :func:`create_model` builds it and then applies the mechanism
(:func:`stochdepth.depth.stochastic_depth`) with the resolved options, so every network, of
every family, goes through the same door (timm's ``build_model_with_cfg`` pattern).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from stochdepth.depth import DepthOptions, resolve_depth_options, stochastic_depth
from stochdepth.depth.adapters import without_native_drop_path

ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model without building it."""

    name: str
    family: str
    depth: int
    residual: bool
    """Whether the network has residual blocks (stochastic depth applies)."""
    min_image_size: int
    """The smallest input side the network takes (its downsampling must leave at least 1 pixel)."""
    parameters: int
    """Parameters for 10 classes and 3 input channels (declared, so that listing builds nothing; a test
    checks every declared count against the built network)."""


@dataclass(frozen=True)
class _Entry:
    builder: ModelBuilder
    info: ModelInfo


_ENTRIES: dict[str, _Entry] = {}


def register_model(
    *, family: str, depth: int, parameters: int, residual: bool = True, min_image_size: int = 4
) -> Callable[[ModelBuilder], ModelBuilder]:
    """A decorator registering a builder (keyword arguments ``num_classes``, ``in_channels``, family options).

    The name is the builder's ``__name__``; a name can be registered once.
    """

    def register(builder: ModelBuilder) -> ModelBuilder:
        name = builder.__name__
        if name in _ENTRIES:
            raise ValueError(f"model {name!r} is already registered")
        _ENTRIES[name] = _Entry(builder, ModelInfo(name, family, depth, residual, min_image_size, parameters))
        return builder

    return register


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_ENTRIES)


EXTERNAL_PREFIXES = {"torchvision/": "torchvision", "timm/": "timm"}
"""Model names resolved by another library (``torchvision/resnet18``, ``timm/vit_tiny_patch16_224``)."""


def _external(name: str) -> str | None:
    return next((library for prefix, library in EXTERNAL_PREFIXES.items() if name.startswith(prefix)), None)


EXTERNAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
"""What may follow ``torchvision/`` or ``timm/``: a plain architecture name. Never a path, and never
timm's ``hf-hub:`` or ``local-dir:`` forms, which read configurations from the network or the disk
(a model name can come from an untrusted run folder or checkpoint)."""


def model_info(name: str) -> ModelInfo:
    """The registry's description of model ``name``; ``ValueError`` (with suggestions) if unknown."""
    library = _external(name) if isinstance(name, str) else None
    if library is not None:
        architecture = name.split("/", 1)[1]
        if not EXTERNAL_NAME.fullmatch(architecture) or ".." in architecture:
            raise ValueError(
                f"model {name!r}: after {library}/ only a plain architecture name is accepted (letters, digits, "
                "_ . -), not a path or a hub/local reference; build such a network in Python and apply "
                "stochdepth.stochastic_depth to it"
            )
        return ModelInfo(name, library, 0, residual=True, min_image_size=32, parameters=0)
    if not isinstance(name, str):
        raise ValueError(f"a model name must be text, got {name!r}")
    if name not in _ENTRIES:
        close = difflib.get_close_matches(name, _ENTRIES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; known models: {', '.join(list_models())}")
    return _ENTRIES[name].info


def resolve_model_depth_options(
    name: str,
    survival_rule: str | None = None,
    final_survival_prob: float | None = None,
    drop_mode: str | None = None,
    scaling: str | None = None,
    time_schedule: str | None = None,
    time_schedule_fraction: float | None = None,
) -> DepthOptions:
    """The stochastic-depth options model ``name`` is built with: the defaults filled in, checked.

    A network without residual blocks (DenseNet) is always constant depth; asking it for
    another rule is a ``ValueError``. Scaling defaults to the paper's for this library's
    networks and to the inverted one for ``torchvision/`` and ``timm/`` names.
    """
    info = model_info(name)
    if not info.residual:
        if survival_rule not in (None, "none"):
            raise ValueError(
                f"stochastic depth does not apply to {name} (no residual blocks): survival_rule must be 'none', "
                f"got {survival_rule!r}"
            )
        survival_rule = "none"
    default_scaling = "inverted" if _external(name) else "paper"
    return resolve_depth_options(
        survival_rule, final_survival_prob, drop_mode, scaling, default_scaling, time_schedule, time_schedule_fraction
    )


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    survival_rule: str | None = None,
    final_survival_prob: float | None = None,
    drop_mode: str | None = None,
    gate_seed: int | None = None,
    scaling: str | None = None,
    image_size: int | None = None,
    time_schedule: str | None = None,
    time_schedule_fraction: float | None = None,
    total_steps: int | None = None,
    depth_options: DepthOptions | None = None,
    **family_options: object,
) -> nn.Module:
    """Build the registered model ``name`` with stochastic depth: the one place networks are made.

    ``survival_rule`` (default ``"linear"``, eq. 4), ``final_survival_prob`` (p_L, default
    0.5), ``drop_mode`` (default ``"batch"``) and ``scaling`` (``"paper"`` here,
    ``"inverted"`` for torchvision's and timm's networks) are resolved by
    :func:`resolve_model_depth_options`. ``gate_seed`` defaults to what ``torch.manual_seed`` set
    (:func:`~stochdepth.stochastic_depth`). ``family_options`` go to the family's builder
    (``dropout_rate`` for Wide ResNets, for example). Arguments that are ``None`` are left
    out, so the family's own defaults stay in force (1000 classes for the ImageNet family,
    10 elsewhere; 3 input channels); an option the family does not take is a ``ValueError``.
    ``image_size`` goes to torchvision's and timm's builders that take one (their Vision
    Transformers and Swins are built for one input size); this library's networks take any.
    ``time_schedule``, ``time_schedule_fraction`` and ``total_steps`` change the drop rates over
    training (:func:`~stochdepth.stochastic_depth`). ``depth_options`` (instead of the six depth
    options) are options resolved already, for this model, and used as they are: a run
    resolves its configuration once and passes it on.
    """
    depth = (survival_rule, final_survival_prob, drop_mode, scaling, time_schedule, time_schedule_fraction)
    model_info(name)
    if depth_options is None:
        depth_options = resolve_model_depth_options(name, *depth)
    elif any(value is not None for value in depth):
        raise ValueError(
            "give either depth_options or survival_rule/final_survival_prob/drop_mode/scaling/time_schedule/"
            "time_schedule_fraction"
        )
    for label, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    given = {
        key: value
        for key, value in {"num_classes": num_classes, "in_channels": in_channels, **family_options}.items()
        if value is not None
    }
    if image_size is not None and _external(name):
        given["image_size"] = image_size
    builder = _external_builder(name) if _external(name) else _ENTRIES[name].builder
    if _external(name):
        _refuse_unrecognised_before_building(lambda: builder(**given), depth_options)
    try:
        network = builder(**given)
    except TypeError as error:
        if "unexpected keyword argument" in str(error):
            raise ValueError(f"model {name!r} does not take {str(error).rsplit(' ', 1)[-1]}") from None
        if "multiple values for" in str(error):
            raise ValueError(f"model {name!r} fixes {str(error).rsplit(' ', 1)[-1]} itself; leave it out") from None
        raise
    return stochastic_depth(network, gate_seed=gate_seed, total_steps=total_steps, options=depth_options)


AUXILIARY_HEADS = ("googlenet", "inception_v3")
"""torchvision classifiers whose training-mode output carries auxiliary logits unless built without them."""


def _refuse_unrecognised_before_building(build: Callable[[], nn.Module], options: DepthOptions) -> None:
    """Build on PyTorch's meta device (no memory, no initialisation work) and convert: a network whose blocks are
    not recognised is refused before it is built for real (torchvision's RegNet-Y-128GF took 98 s to get there).

    A builder that cannot build on the meta device is left to the real build, which checks the same.
    """
    try:
        with torch.device("meta"):
            network = build()
    except Exception:  # any failure here is the real build's to report
        return
    stochastic_depth(network, gate_seed=0, options=options)


def _external_builder(name: str) -> ModelBuilder:
    """A builder for ``torchvision/<name>`` or ``timm/<name>``: random weights, the data's classes and channels."""
    library, model = name.split("/", 1)

    def torchvision_model(num_classes: int = 1000, in_channels: int = 3, image_size: int | None = None) -> nn.Module:
        import torchvision

        if model not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(
                f"torchvision has no classification model {model!r} (detection, segmentation, video, optical-flow "
                "and quantized models are not built here: their builders fetch backbone weights)"
            )
        try:
            extra = {"aux_logits": False} if model in AUXILIARY_HEADS else {}
            network = _with_image_size(
                lambda **size: torchvision.models.get_model(
                    model, weights=None, num_classes=num_classes, **extra, **size
                ),
                {"image_size": image_size},
            )
        except (ValueError, AssertionError) as error:
            raise ValueError(f"torchvision cannot build {model!r} ({str(error).splitlines()[0]})") from None
        without_native_drop_path(network)
        if in_channels != 3:
            _replace_stem(network, in_channels)
        return network

    def timm_model(num_classes: int = 1000, in_channels: int = 3, image_size: int | None = None) -> nn.Module:
        try:
            import timm
        except ImportError:
            raise ValueError(f"{name} needs timm: pip install 'stochdepth[timm]'") from None
        try:
            network = _with_image_size(
                lambda **size: timm.create_model(
                    model, pretrained=False, num_classes=num_classes, in_chans=in_channels, **size
                ),
                {"img_size": image_size},
            )
        except (RuntimeError, AssertionError) as error:
            raise ValueError(f"timm cannot build {model!r} ({str(error).splitlines()[0]})") from None
        return without_native_drop_path(network)

    return torchvision_model if library == "torchvision" else timm_model


def _with_image_size(build: Callable[..., nn.Module], image_size: dict[str, int | None]) -> nn.Module:
    """``build(**image_size)`` for a network that takes its input size, else ``build()`` (ResNets, ConvNeXts)."""
    ((keyword, size),) = image_size.items()
    if size is None:
        return build()
    try:
        return build(**image_size)
    except TypeError as error:
        if f"'{keyword}'" not in str(error):
            raise
        return build()


def _replace_stem(network: nn.Module, in_channels: int) -> None:
    """Give the network's first convolution ``in_channels`` inputs (a new, randomly initialised layer)."""
    for parent in network.modules():
        for name, stem in parent.named_children():
            if isinstance(stem, nn.Conv2d):
                replacement = nn.Conv2d(
                    in_channels,
                    stem.out_channels,
                    stem.kernel_size,
                    stem.stride,
                    stem.padding,
                    stem.dilation,
                    bias=stem.bias is not None,
                )
                setattr(parent, name, replacement)
                return
    raise ValueError(f"in_channels={in_channels}: {type(network).__name__} has no convolution to take them")


def check_weights(network: nn.Module, tensors: dict[str, torch.Tensor], name: str) -> None:
    """``tensors`` (a state dict from a file: untrusted) must fit ``network`` (model ``name``) and hold sound numbers.

    Every key of the network and no other, each with its shape and its kind of number (a
    floating-point weight is not cast from integers or booleans), every floating-point value
    finite, and BatchNorm running variances not negative. ``ValueError`` says the first problem.
    """
    own = network.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"its weights do not fit {name} ({len(missing)} missing, {len(unexpected)} unexpected tensors)"
        )
    for key, value in tensors.items():
        expected = own[key]
        if not isinstance(value, torch.Tensor) or value.shape != expected.shape:
            raise ValueError(f"its weights do not fit {name} (tensor shapes differ: {key})")
        if value.is_floating_point() != expected.is_floating_point() or value.dtype == torch.bool:
            raise ValueError(f"{key} holds {value.dtype} values where the network has {expected.dtype}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{key} holds non-finite values (NaN or infinity)")
        if key.endswith("running_var") and (value < 0).any():
            raise ValueError(f"{key} holds negative variances")
