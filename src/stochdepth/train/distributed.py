"""Data-parallel training with ``torchrun`` and PyTorch's own DistributedDataParallel (DDP).

``torchrun --nproc_per_node N -m stochdepth train ...`` starts N processes ("ranks"), one
per device. :func:`join` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and joins the process group: NCCL when
training on CUDA, gloo on the CPU. One process (no torchrun, or ``WORLD_SIZE=1``) gets
:class:`SingleProcess`, whose operations are the identity, so the trainer has one code path.

How a run is split, and why it is still the single-process run:

- Data: every rank holds the data set and takes its rows of every global batch
  (:class:`~stochdepth.data.shard.Shard`); ``--batch-size`` stays the global batch and the
  recipe is unchanged. Evaluation shards the sets and sums the counts.
- Gates: every rank's :class:`~stochdepth.depth.GateGenerator` has the same seed and
  draws in lockstep, so batch mode drops the same blocks everywhere; sample mode draws for
  the global batch and each rank keeps its rows.
- Gradients: DDP (default settings) averages them. A dropped block's parameters get an
  exact zero gradient from the mechanism itself (``stochdepth.depth.residual``), so DDP's
  reducer sees every parameter without searching the autograd graph each step
  (``find_unused_parameters=True``; docs/benchmarks.md has the measurement), and weight
  decay and momentum apply to them as on one process.
- Decisions the host makes (stop on a signal, a timed checkpoint, a progress line) are
  agreed by all ranks every step (:meth:`ProcessGroup.agree`, on a gloo group, so a GPU
  never waits for it); everything else is decided by the step count.
- Rank 0 alone reads and writes the run folder; it hands the other ranks the plan
  (:meth:`ProcessGroup.from_main`). The other ranks print nothing but their own errors.
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from stochdepth.data import Shard
from stochdepth.train.launch import torchrun_place
from stochdepth.train.progress import silence
from stochdepth.train.setup import resolve_device
from stochdepth.train.signals import PeerFailed

Result = TypeVar("Result")


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class Ranks(Protocol):
    """What the trainer needs of its place in a run: :class:`SingleProcess` or :class:`ProcessGroup`.

    Distributed work is confined to these: wrapping the model, agreeing on the host's
    decisions, summing counts, and rank 0's reads and writes handed to the others.
    """

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool: ...

    @property
    def shard(self) -> Shard: ...

    def local_batch(self, batch_size: int) -> int: ...

    def seed_own_stream(self, seed: int) -> None: ...

    def sync_batchnorm(self, model: nn.Module) -> nn.Module: ...

    def wrap(self, model: nn.Module) -> nn.Module: ...

    def sum(self, values: torch.Tensor) -> torch.Tensor: ...

    def agree(self, flags: Sequence[bool]) -> list[bool]: ...

    def maximum(self, value: int) -> int: ...

    def gather(self, value: Any) -> list[Any]: ...

    def broadcast_buffers(self, model: nn.Module) -> None: ...

    def from_main(self, make: Callable[[], Result]) -> Result: ...

    def all_through(self, what: str) -> contextlib.AbstractContextManager[None]: ...


class _Place:
    """Rank ``rank`` of ``world_size`` on ``device``: what a rank knows without talking to the others."""

    rank = 0
    world_size = 1

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world_size)

    def local_batch(self, batch_size: int) -> int:
        """This rank's share of a global batch; ``ValueError`` unless it divides by the world size."""
        if batch_size % self.world_size:
            raise ValueError(
                f"optim.batch_size {batch_size} (the global batch) does not divide by the {self.world_size} processes; "
                f"use a multiple of {self.world_size}"
            )
        return batch_size // self.world_size


class SingleProcess(_Place):
    """One process, no group: every collective operation is the identity."""

    def seed_own_stream(self, seed: int) -> None:
        """Give this rank its own torch random stream (dropout, ImageNet's augmentation workers)."""

    def sync_batchnorm(self, model: nn.Module) -> nn.Module:
        """BatchNorm statistics over the global batch (one process: already so)."""
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that training steps call (DDP around ``model`` on several ranks)."""
        return model

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks (a tensor on the training device)."""
        return values

    def agree(self, flags: Sequence[bool]) -> list[bool]:
        """Each flag, true if it is true on any rank."""
        return list(flags)

    def maximum(self, value: int) -> int:
        """The largest ``value`` of any rank."""
        return value

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order."""
        return [value]

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics), so all ranks evaluate the same network."""

    def from_main(self, make: Callable[[], Result]) -> Result:
        """``make()`` run on rank 0 alone, its result handed to every rank (or its failure to every rank)."""
        return make()

    @contextlib.contextmanager
    def all_through(self, what: str) -> Iterator[None]:
        """Run the block on every rank; if it fails on any rank, it fails on all (no rank waits for a dead one)."""
        yield


class ProcessGroup(_Place):
    """This process as rank ``rank`` of ``world_size`` in torch.distributed's default group."""

    def __init__(self, device: torch.device, control: Any) -> None:
        super().__init__(device)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.control = control

    def seed_own_stream(self, seed: int) -> None:
        torch.manual_seed((seed * 65_537 + self.rank) % 2**63)

    def sync_batchnorm(self, model: nn.Module) -> nn.Module:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP around ``model``, its gradients allocated up front as views of DDP's buckets.

        Allocating them first (zeros, in each parameter's own layout) keeps autograd from
        creating a gradient in another layout, which DDP would copy with a warning (a 1-channel
        stem's weight, whose size-1 dimension has an arbitrary stride, does this).
        """
        for param in model.parameters():
            if param.requires_grad and param.grad is None:
                param.grad = torch.zeros_like(param)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        total = values.clone()
        dist.all_reduce(total)
        return total

    def agree(self, flags: Sequence[bool]) -> list[bool]:
        votes = torch.tensor([int(flag) for flag in flags], dtype=torch.int32)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=self.control)
        return [bool(vote) for vote in votes.tolist()]

    def maximum(self, value: int) -> int:
        largest = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX, group=self.control)
        return int(largest.item())

    def gather(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value, group=self.control)
        return values

    def broadcast_buffers(self, model: nn.Module) -> None:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def from_main(self, make: Callable[[], Result]) -> Result:
        message: list[Any] = [None]
        failure: Exception | None = None
        if self.is_main:
            try:
                message = [("done", make())]
            except Exception as error:
                failure = error
                message = [("failed", _describe(error))]
        dist.broadcast_object_list(message, src=0, group=self.control)
        if failure is not None:
            raise failure
        outcome, value = message[0]
        if outcome == "failed":
            raise PeerFailed(f"rank 0 failed: {value}")
        return value

    @contextlib.contextmanager
    def all_through(self, what: str) -> Iterator[None]:
        failure: Exception | None = None
        try:
            yield
        except Exception as error:
            failure = error
        reports = self.gather(None if failure is None else _describe(failure))
        if failure is not None:
            raise failure
        for rank, report in enumerate(reports):
            if report is not None:
                raise PeerFailed(f"rank {rank} failed {what}: {report}")


def rank_device(name: str | None, local_rank: int) -> torch.device:
    """The device of the rank with ``local_rank`` on its node: ``cuda:LOCAL_RANK`` for CUDA, else the CPU.

    Under torchrun a GPU index in ``name`` (``cuda:1``, as a resumed run's ``config.json``
    may hold) gives way to ``LOCAL_RANK``: one process per GPU.
    """
    device = resolve_device(None if name is None else name.split(":")[0])
    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"LOCAL_RANK {local_rank}, but this node has {torch.cuda.device_count()} GPU(s); "
            "start at most one process per GPU (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def join(device_name: str | None) -> Ranks:
    """This process's place in the run: a :class:`ProcessGroup` under torchrun (or in a joined group), else one.

    Joins torch.distributed's default group from torchrun's environment the first time (NCCL
    for CUDA, gloo for the CPU) and leaves it when the process exits (:func:`_leave_at_exit`);
    a process that is not rank 0 prints nothing from then on but its errors. A group the
    caller initialised is used as it is and left to the caller.
    """
    place = torchrun_place()
    initialised = dist.is_available() and dist.is_initialized()
    if not initialised and place.world_size == 1:
        return SingleProcess(resolve_device(device_name))
    if not dist.is_available():
        raise ValueError("this PyTorch build has no torch.distributed; run one process, without torchrun")
    device = rank_device(device_name, place.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not initialised:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave_at_exit)
    control = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    group = ProcessGroup(device, control)
    if not group.is_main:
        silence()
    return group


def _leave_at_exit() -> None:
    """Destroy the groups :func:`join` made, before the interpreter tears down its modules.

    A process that exits with a gloo group alive can abort in that teardown ("terminate called
    without an active exception"); torchrun reports the rank as failed and kills the others,
    sometimes before rank 0 has written the run's summary. The group stays joined until exit,
    so that a script may call ``train`` more than once in one process group.
    """
    if dist.is_initialized():
        dist.destroy_process_group()
