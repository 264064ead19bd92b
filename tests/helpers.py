"""Helpers shared by tests."""

import torch
from torch import nn


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Move BatchNorm statistics and affine parameters away from their initial values (as training would)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


def one_line_error(capsys) -> str:
    """The command's standard error, checked to be one ``stochdepth: error:`` line without a traceback."""
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("stochdepth: error: "), error
    assert "Traceback" not in error
    return error
