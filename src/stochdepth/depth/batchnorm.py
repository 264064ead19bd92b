"""BatchNorm statistics for the network that evaluation runs: every block, each branch scaled by p_l.

A stochastic network's BatchNorm layers average their statistics over training steps in
which some blocks were dropped (and, under the paper's scaling, the surviving branches
unscaled), while evaluation runs every block scaled by p_l (section 3, eq. 5): the
statistics describe a network that evaluation never runs. Early in a run this inflates
validation error (docs/results.md measures it). :func:`recalibrated_batchnorm` recomputes
them over a few batches of training images, for the time of an evaluation, and then puts
everything back, so that training continues exactly as it would have without.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from stochdepth.depth.apply import gate_generators, run_every_block


def _tracking_norms(model: nn.Module) -> list[_BatchNorm]:
    return [module for module in model.modules() if isinstance(module, _BatchNorm) and module.track_running_stats]


@contextlib.contextmanager
def recalibrated_batchnorm(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Iterator[nn.Module]:
    """Within the block ``model`` is in evaluation mode, its BatchNorm statistics recomputed over ``batches``.

    ``batches`` yields the network's inputs (a tensor each), typically training images without
    augmentation. Each BatchNorm layer's statistics become the plain average over the batches
    (momentum ``None``, as ``torch.optim.swa_utils.update_bn``), computed with every block of
    every converted network in ``model`` running, combined as in evaluation
    (:func:`~stochdepth.depth.apply.run_every_block`). Unlike ``update_bn``, only the BatchNorm
    layers run in training mode: dropout stays off and draws no random numbers, and no gate is
    drawn, so nothing but the BatchNorm buffers changes. On leaving (also after an error, e.g.
    from ``batches``) the buffers are copied back in place, and the momenta and every module's
    training flag are as they were: a run that recalibrates before each evaluation trains
    exactly as one that does not. ``autocast`` is entered around each forward pass (the
    numerics of evaluation). A ``model`` without BatchNorm layers runs no batch. Under data
    parallelism, give every process the same batches: every replica then holds the same
    statistics, those one process would compute.
    """
    norms = _tracking_norms(model)
    flags = [(module, module.training) for module in model.modules()]
    saved = [
        (norm, norm.momentum, [(buffer, buffer.clone()) for buffer in norm.buffers(recurse=False)]) for norm in norms
    ]
    every_block = run_every_block(model) if gate_generators(model) else contextlib.nullcontext()
    try:
        model.eval()
        if norms:
            _recompute(model, norms, batches, every_block, autocast)
        yield model
    finally:
        with torch.no_grad():
            for norm, momentum, buffers in saved:
                norm.momentum = momentum
                for buffer, value in buffers:
                    buffer.copy_(value)
        for module, training in flags:
            module.training = training


def _recompute(
    model: nn.Module,
    norms: list[_BatchNorm],
    batches: Iterable[torch.Tensor],
    every_block: contextlib.AbstractContextManager,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> None:
    """Set each of ``norms`` to the mean of its batch statistics over ``batches`` (what momentum ``None`` gives).

    The layers run with momentum 1 (each forward pass leaves one batch's statistics) and the
    average is taken here, on the device, over the batches each layer saw: with momentum
    ``None``, BatchNorm reads its batch count as a Python number, which breaks a compiled
    network's graph at every layer.
    """
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = 1.0
        norm.train()
    totals = [(torch.zeros_like(norm.running_mean), torch.zeros_like(norm.running_var)) for norm in norms]
    seen = 0
    with torch.no_grad(), every_block:
        for images in batches:
            before = [norm.num_batches_tracked.clone() for norm in norms]
            with autocast():
                model(images)
            for norm, (mean, variance), count in zip(norms, totals, before):
                ran = (norm.num_batches_tracked - count).to(mean.dtype)
                mean.add_(ran * norm.running_mean)
                variance.add_(ran * norm.running_var)
            seen += 1
    if seen == 0:
        raise ValueError("recalibrating BatchNorm needs at least one batch of images")
    with torch.no_grad():
        for norm, (mean, variance) in zip(norms, totals):
            batches_seen = norm.num_batches_tracked.to(mean.dtype)
            norm.running_mean.copy_(torch.where(batches_seen > 0, mean / batches_seen.clamp(min=1), 0.0))
            norm.running_var.copy_(torch.where(batches_seen > 0, variance / batches_seen.clamp(min=1), 1.0))
            norm.eval()
