"""Model families, one file each, and the registry that names them."""

from stochdepth.models.cifar_resnet import CifarResNet, cifar_resnet
from stochdepth.models.registry import create_model, list_models, register_model

__all__ = ["CifarResNet", "cifar_resnet", "create_model", "list_models", "register_model"]
