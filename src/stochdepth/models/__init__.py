"""Model families, one file each, and the registry that names them."""

from stochdepth.models.cifar_resnet import CifarResNet, cifar_resnet
from stochdepth.models.densenet import DenseNetBC, densenet_bc
from stochdepth.models.imagenet_resnet import ImageNetResNet, imagenet_resnet
from stochdepth.models.preact_resnet import PreActResNet, preact_resnet
from stochdepth.models.registry import create_model, list_models, register_model
from stochdepth.models.wide_resnet import WideResNet, wide_resnet

__all__ = [
    "CifarResNet",
    "DenseNetBC",
    "ImageNetResNet",
    "PreActResNet",
    "WideResNet",
    "cifar_resnet",
    "create_model",
    "densenet_bc",
    "imagenet_resnet",
    "list_models",
    "preact_resnet",
    "register_model",
    "wide_resnet",
]
