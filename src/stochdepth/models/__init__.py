"""Model families, one file each, and the registry that names them."""

from stochdepth.models.cifar_resnet import CifarResNet, cifar_resnet
from stochdepth.models.densenet import DenseNetBC, densenet_bc
from stochdepth.models.imagenet_resnet import imagenet_resnet
from stochdepth.models.preact_resnet import PreActResNet, preact_resnet
from stochdepth.models.registry import (
    ModelInfo,
    check_weights,
    create_model,
    list_models,
    model_info,
    register_model,
    resolve_model_depth_options,
)
from stochdepth.models.wide_resnet import WideResNet, wide_resnet

__all__ = [
    "CifarResNet",
    "DenseNetBC",
    "ModelInfo",
    "PreActResNet",
    "WideResNet",
    "check_weights",
    "cifar_resnet",
    "create_model",
    "densenet_bc",
    "imagenet_resnet",
    "list_models",
    "model_info",
    "preact_resnet",
    "register_model",
    "resolve_model_depth_options",
    "wide_resnet",
]
