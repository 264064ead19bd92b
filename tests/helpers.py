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


def replayed_gates(network: nn.Module, batch_size: int) -> list[tuple[torch.Tensor, float]]:
    """Per branch of ``network`` whose p_l is below 1, the last step's gate as a 0/1 row mask and its scale.

    A network that multiplies each branch by these (a mask-multiply drop path) computes what the
    converted network computed by skipping.
    """
    import stochdepth
    from stochdepth.depth.residual import training_scale

    gates = stochdepth.gate_generator(network)
    replay = []
    for index, prob in enumerate(stochdepth.survival_probs(network)):
        if prob == 1.0:
            continue
        rows = gates.step.rows[index]
        mask = torch.zeros(batch_size)
        if gates.step.survives[index]:
            mask[slice(None) if rows is None else rows] = 1.0
        ran = int(mask.sum()) or 1
        replay.append((mask, training_scale(gates.scaling, gates.drop_mode, prob, ran, batch_size)))
    kept = sum(int(mask.sum()) for mask, _ in replay)
    assert 0 < kept < batch_size * len(replay), "some branches ran on some rows, some were dropped"
    return replay


def assert_same_outputs_and_gradients(
    output: torch.Tensor, expected: torch.Tensor, network: nn.Module, reference: nn.Module
) -> None:
    """Outputs close, and each parameter's gradient close relative to the largest of the reference's."""
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-5)
    for (key, mine), theirs in zip(network.named_parameters(), reference.parameters()):
        scale = float(theirs.grad.abs().max())
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-5 * scale + 1e-6, msg=key)
