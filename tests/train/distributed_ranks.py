"""Running training on several gloo ranks inside a test: a BN-free test network and a spawn helper.

Spawned processes import this module by name, so what they run lives here, not in a test file.
PyTorch's SyncBatchNorm refuses CPU tensors and plain BatchNorm sees each rank's share of
the batch, so runs that must equal one process use :func:`plain_residual_net`, whose
output for a sample does not depend on the rest of the batch.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from stochdepth.config import TrainConfig
from stochdepth.depth import ResidualBlock
from stochdepth.models import list_models, register_model

PLAIN_NET = "plain_residual_net"


def plain_residual_net(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A stem, three residual blocks (conv-ReLU-conv, identity shortcut) and a classifier: no normalisation."""
    width = 8

    def block() -> ResidualBlock:
        branch = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
        return ResidualBlock(branch)

    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Sequential(block(), block(), block()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )


if PLAIN_NET not in list_models():
    register_model(family="test (no BatchNorm)", depth=8, parameters=3818)(plain_residual_net)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, job: Callable[[int, Path], Any], out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        result = job(rank, Path(out))
    except Exception as error:  # reported to the test, which decides whether it was expected
        result = {"error": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()}
    torch.save(result, Path(out) / f"rank{rank}.pt")


def run_ranks(job: Callable[[int, Path], Any], out: Path, world_size: int = 2, timeout: float = 120.0) -> list[Any]:
    """Run ``job(rank, out)`` on ``world_size`` spawned gloo ranks; each rank's result (or its error) in rank order.

    A run that outlasts ``timeout`` (a hang) is killed and fails the test.
    """
    out.mkdir(parents=True, exist_ok=True)
    context = mp.start_processes(
        _rank_main, args=(world_size, free_port(), job, str(out)), nprocs=world_size, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError(f"{world_size} ranks did not finish within {timeout:.0f} s (a hang)")
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)]


def plain_config(data_dir: Path, **options: object) -> TrainConfig:
    """A few seconds of training of the BN-free network on the test data."""
    base = {
        "model": PLAIN_NET,
        "dataset": "fashion-mnist",
        "data_dir": str(data_dir),
        "train_size": 128,
        "eval_size": 41,
        "batch_size": 16,
        "epochs": 2,
        "lr": 0.05,
        "seed": 3,
        "device": "cpu",
    }
    return TrainConfig().override(**{**base, **options})


def _after_each_step(record: Callable[[Any, torch.Tensor], None]) -> Any:
    """A patch of ``Trainer.train_step`` that calls ``record(trainer, labels)`` after each step."""
    from stochdepth.train.trainer import Trainer

    original = Trainer.train_step

    def train_step(self: Trainer, images: torch.Tensor, labels: torch.Tensor) -> None:
        original(self, images, labels)
        record(self, labels)

    return mock.patch.object(Trainer, "train_step", train_step)


def recorded_training(config: TrainConfig, out: Path | None) -> dict[str, Any]:
    """Train, keeping after every step the gates this process used and its weights."""
    from stochdepth.train import train

    steps: list[dict[str, Any]] = []

    def record(trainer: Any, labels: torch.Tensor) -> None:
        gates = trainer.gates.step
        steps.append(
            {
                "survives": None if gates is None else list(gates.survives),
                "rows": None if gates is None else [None if rows is None else len(rows) for rows in gates.rows],
                "local_batch": len(labels),
                "params": {name: value.detach().clone() for name, value in trainer.model.state_dict().items()},
            }
        )

    with _after_each_step(record):
        summary = train(config, out=out)
    return {"summary": summary, "steps": steps}


def _outcome(run: Callable[[], Any]) -> Any:
    try:
        return run()
    except Exception as error:  # the tests check which errors each rank got
        return {"error": type(error).__name__, "message": str(error)}


def _no_data(*args: object, **kwargs: object) -> None:
    """What building the loaders does on a node where the data set is missing."""
    from stochdepth.data import DataMissing

    raise DataMissing("Fashion-MNIST not found on this node")


def _signal_at_step_five(trainer: Any, labels: torch.Tensor) -> None:
    """A SIGTERM noted by this process alone after its fifth step (as if only it got one)."""
    if trainer.counters.iteration == 5:
        trainer.stop_signal = "SIGTERM"


def _signal_in_the_first_evaluation() -> Any:
    """A SIGTERM noted by this process alone as its first evaluation begins."""
    from stochdepth.train.trainer import Trainer

    real = Trainer._error

    def error(self: Trainer, loader: Any, name: str) -> float:
        self.stop_signal = "SIGTERM"
        return real(self, loader, name)

    return mock.patch.object(Trainer, "_error", error)


def _launcher_gone_after_step_five() -> Any:
    """``os.getppid`` as the trainer sees it: the launcher's pid at start and for 5 steps, then init's (re-parented)."""
    real = os.getppid
    calls = {"count": 0}

    def getppid() -> int:
        calls["count"] += 1
        return real() if calls["count"] <= 5 else 1

    return mock.patch("stochdepth.train.trainer.os.getppid", getppid)


def _call_within(patch: Any, run: Callable[[], Any]) -> Any:
    with patch:
        return run()


def scenarios(rank: int, out: Path, data_dir: Path) -> dict[str, Any]:
    """Every multi-rank case the tests check, one after another in one process group (one spawn).

    Rank 1 alone gets a signal in one case and misses the data in another.
    """
    from stochdepth.train import train, trainer

    _note_at_exit_whether_a_group_is_left(out / f"rank{rank}-group-at-exit.txt")

    def on_rank_one(patch: Any, run: Callable[[], Any]) -> Any:
        return _call_within(patch if rank == 1 else contextlib.nullcontext(), run)

    return {
        "constant": _outcome(lambda: recorded_training(plain_config(data_dir, survival_rule="none"), out / "constant")),
        "batch": _outcome(
            lambda: recorded_training(plain_config(data_dir, final_survival_prob=0.5, weight_decay=0.01), out / "batch")
        ),
        "sample": _outcome(
            lambda: recorded_training(
                plain_config(
                    data_dir, drop_mode="sample", final_survival_prob=0.2, batch_size=4, train_size=32, epochs=1
                ),
                out / "sample",
            )
        ),
        "batchnorm": _outcome(
            lambda: train(plain_config(data_dir, model="resnet8", train_size=64, epochs=1), out=out / "batchnorm")
        ),
        "recalibrated": _outcome(
            lambda: train(
                plain_config(data_dir, model="resnet8", train_size=64, epochs=1, recalibrate_batchnorm=40),
                out=out / "recalibrated",
            )
        ),
        "batch_not_dividing": _outcome(lambda: train(plain_config(data_dir, batch_size=15), out=out / "odd")),
        "signal_on_one_rank": _outcome(
            lambda: on_rank_one(
                _after_each_step(_signal_at_step_five), lambda: train(plain_config(data_dir), out=out / "signal")
            )
        ),
        "signal_in_evaluation": _outcome(
            lambda: on_rank_one(
                _signal_in_the_first_evaluation(), lambda: train(plain_config(data_dir), out=out / "signal-eval")
            )
        ),
        "launcher_gone": _outcome(
            lambda: _call_within(
                _launcher_gone_after_step_five(), lambda: train(plain_config(data_dir), out=out / "orphan")
            )
        ),
        "rank_fails_at_start": _outcome(
            lambda: on_rank_one(
                mock.patch.object(trainer, "build_loaders", _no_data),
                lambda: train(plain_config(data_dir), out=out / "failed-start"),
            )
        ),
    }


def _note_at_exit_whether_a_group_is_left(path: Path) -> None:
    """Write to ``path``, as this process exits, whether a process group is still initialised then.

    Registered before the first ``train`` call, so it runs after every exit handler that call
    registered (they run last-in, first-out).
    """
    atexit.register(lambda: path.write_text(str(dist.is_initialized())))


def sync_batchnorm_run(rank: int, out: Path, data_dir: Path) -> dict[str, Any]:
    """A resnet8 run with SyncBatchNorm on CUDA (one GPU per rank), its weights and statistics after every step."""
    config = plain_config(data_dir, model="resnet8", device="cuda", sync_batchnorm=True, epochs=1, train_size=64)
    return recorded_training(config, None)
