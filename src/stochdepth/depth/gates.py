"""Gates: which residual branches run in a training step, drawn on the host from a seeded generator.

What a step is: every training-mode call of the network that :func:`~stochdepth.stochastic_depth`
converted begins one (a forward pre-hook on that module calls :meth:`GateGenerator.begin_step`),
and the first branch that asks for its gate in it draws the gates of *all* branches at once.
Everything else in that step reuses them: activation checkpointing that recomputes a block
(reentrant or not, timm's ``set_grad_checkpointing``), and a branch called twice. Gradient
accumulation is one step per micro-batch, as the paper's per-mini-batch gates are. An EMA
copy or a teacher is another module with its own generator, so it never shifts the trained
network's sequence. A user who calls the blocks without calling the converted module must
call :meth:`GateGenerator.begin_step` (``stochdepth.gate_generator(model).begin_step()``)
before each step.

Batch mode draws one vector of L uniforms; sample mode the L subset sizes and one L x batch
matrix; subset mode the matrix only (its sizes are fixed: :func:`subset_sizes`). Drawing never
waits for the device, and the sequence is a function of the seed and the number of steps
only. The generator counts the steps that drew gates (``steps_taken``, in its state): a time
schedule (:class:`~stochdepth.depth.schedule.TimeSchedule`) reads the survival probabilities in
force at that step, so a resumed run continues it exactly.

When ``torch.distributed`` is initialised, sample and subset mode draw every rank's rows (the
world size times this rank's batch, equal batches assumed) and keep this rank's: each rank's
count follows :func:`survivor_counts` (or :func:`subset_sizes`) on its own batch, so no rank's
branch ever runs on exactly one row of several, and every sample is in its branch's subset with
probability exactly p_l. Every rank knows whether a branch runs on any rank
(``StepGates.runs_anywhere``). Batch mode is the same on every rank as long as the seeds are
(see :func:`common_seed`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stochdepth.depth.schedule import DEFAULT_DROP_MODE, DEFAULT_SCALING, TimeSchedule, survival_probs_at


def survivor_counts(
    survival_probs: torch.Tensor, batch_size: int, rounding_draws: torch.Tensor, split_draws: torch.Tensor
) -> torch.Tensor:
    """How many samples run each branch in sample mode.

    With ``expected = survival_prob * batch_size`` the count is ``floor(expected)`` or
    ``floor(expected) + 1``: ``rounding_draws`` (uniforms in [0, 1), one per branch) round
    stochastically, so the mean is exactly ``expected``. A count of one, which would leave
    BatchNorm a single sample, becomes zero or two with equal probability (``split_draws``),
    which keeps the mean. Every sample is in the subset with probability exactly p_l.
    """
    expected = survival_probs.double() * batch_size
    counts = expected.floor() + (rounding_draws.double() < expected - expected.floor()).double()
    counts = counts.clamp(max=batch_size).long()
    if batch_size >= 2:
        counts = torch.where(counts == 1, torch.where(split_draws < 0.5, 2, 0), counts)
    return counts


def subset_sizes(survival_probs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """How many rows run each branch in subset mode: ``round(p_l * batch_size)``, at least 2 and at most the batch.

    The same every step (DINOv2's fixed-size subsets): shapes never change, so a compiled
    branch needs no dynamic batch size. At least two rows (when the batch has two) keep
    BatchNorm in a branch from seeing one sample; the inverted scaling divides by the share
    of the batch that ran, which is exact here.
    """
    sizes = (survival_probs.double() * batch_size).round().long()
    return sizes.clamp(min=min(2, batch_size), max=batch_size)


def data_parallel_position() -> tuple[int, int]:
    """(this process's rank, world size) when ``torch.distributed`` is initialised, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_from_rank_zero(values: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``values`` (an int64 CPU tensor) on every rank; on a CUDA device for NCCL, back on the CPU."""
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    values = values.to(device)
    dist.broadcast(values, src=0)
    return values.cpu()


def common_seed(seed: int) -> int:
    """``seed`` as rank 0 has it when ``torch.distributed`` is initialised (a broadcast), else ``seed``.

    timm's ``train.py`` seeds every rank differently; gates must still agree across ranks.
    """
    if data_parallel_position()[1] == 1:
        return seed
    return int(broadcast_from_rank_zero(torch.tensor([seed], dtype=torch.int64))[0])


@dataclass
class StepGates:
    """The gates of one training step: per branch, whether (batch) or on which rows (sample) it runs.

    ``survives`` and ``rows`` are this process's; ``runs_anywhere`` says whether the branch
    runs on any row of the global batch (sample mode in data-parallel training: on another
    process's rows, perhaps).
    """

    survives: list[bool]
    rows: list[torch.Tensor | None]
    batch_size: int
    runs_anywhere: list[bool]


class GateGenerator:
    """The model's host-side source of gates: a seeded CPU ``torch.Generator`` (module docstring).

    It knows every branch's survival probability, the drop mode and the scaling convention.
    Its state (:meth:`state_dict`) belongs in a checkpoint so that a resumed run draws the
    gates an uninterrupted run would have drawn; it is not in the model's ``state_dict``, so
    the weights stay loadable into the plain network.

    ``branches_run`` counts the residual branches that ran in training (a sample-mode branch
    counts the fraction of the global batch it ran on): the realised depth, which a trainer
    reads and resets with :meth:`take_branches_run`. While ``every_block`` is set
    (:func:`~stochdepth.run_every_block`) every branch runs as in evaluation.

    ``survival_probs`` is the schedule over depth; ``time_schedule`` changes it over the
    training steps, and :attr:`probs_in_force` holds each branch's probability at the current
    step (the one being trained, or the last one trained): the gates are drawn with it, the
    inverted scaling divides by it and evaluation under the paper's scaling multiplies by it.
    """

    def __init__(
        self,
        seed: int = 0,
        survival_probs: list[float] | None = None,
        drop_mode: str = DEFAULT_DROP_MODE,
        scaling: str = DEFAULT_SCALING,
        time_schedule: TimeSchedule | None = None,
    ) -> None:
        self.seed = seed
        self.depth_probs = list(survival_probs or [])
        self.drop_mode = drop_mode
        self.scaling = scaling
        self.time_schedule = time_schedule if time_schedule is not None else TimeSchedule()
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.branches_run = 0.0
        self.step: StepGates | None = None
        self.every_block_requests = 0
        self.agreed_across_ranks = False
        self.factor_in_force: float | None = None
        self.set_steps_taken(0)

    @property
    def current_step(self) -> int:
        """The 0-based step being trained, or the last one trained (0 before any)."""
        return max(self.steps_taken - 1, 0)

    def set_steps_taken(self, steps: int) -> None:
        """Say that ``steps`` training steps have drawn gates (a resume), and update the probabilities in force."""
        self.steps_taken = steps
        factor = self.time_schedule.drop_factor(self.current_step)
        if factor != self.factor_in_force:
            self.factor_in_force = factor
            self.probs_in_force = survival_probs_at(self.depth_probs, self.time_schedule, self.current_step)
            self.survival_probs = torch.tensor(self.probs_in_force, dtype=torch.float64)

    def expected_branches(self, start: int, stop: int) -> float:
        """The expected number of branches run per step over the 0-based steps ``start`` <= t < ``stop``.

        The sum of p_l(t) over the branches, averaged over those steps (the time schedule's mean).
        """
        factor = self.time_schedule.mean_drop_factor(start, stop)
        return sum(1.0 - factor * (1.0 - prob) for prob in self.depth_probs)

    @property
    def every_block(self) -> bool:
        """Whether a :meth:`running_every_block` context is open (every branch runs as in evaluation)."""
        return self.every_block_requests > 0

    def agree_across_ranks(self) -> None:
        """Take rank 0's gate state (seed, generator, steps) once, when ``torch.distributed`` is initialised.

        A network converted before the process group existed (Lightning builds the module
        first) on ranks seeded differently would otherwise drop different blocks on each rank.
        One broadcast, at the first training step under ``torch.distributed``; a generator whose
        seed came from rank 0 at conversion, or was given, needs none.
        """
        if self.agreed_across_ranks or data_parallel_position()[1] == 1:
            return
        state = self.generator.get_state()
        values = broadcast_from_rank_zero(
            torch.cat([torch.tensor([self.seed, self.steps_taken], dtype=torch.int64), state.long()])
        )
        self.seed, steps = int(values[0]), int(values[1])
        self.generator.set_state(values[2:].to(torch.uint8))
        self.set_steps_taken(steps)
        self.agreed_across_ranks = True

    @torch.compiler.disable
    def begin_step(self) -> None:
        """The next gate asked for draws a new step's gates (the converted module's pre-hook calls this)."""
        self.step = None

    def take_branches_run(self) -> float:
        """The branches run since the last call, and reset the count."""
        count, self.branches_run = self.branches_run, 0.0
        return count

    def draw_step(self, batch_size: int, device: torch.device) -> StepGates:
        """Draw every branch's gate for one training step (one host call per kind of draw)."""
        probs = self.survival_probs
        count = len(probs)
        if self.drop_mode == "batch":
            survives = (torch.rand(count, generator=self.generator, dtype=torch.float64) < probs).tolist()
            runs_anywhere = survives
            rows: list[torch.Tensor | None] = [None] * count
            self.branches_run += float(sum(survives))
        else:
            shard, shards = data_parallel_position()
            if self.drop_mode == "sample":
                draws = torch.rand(2, shards, count, generator=self.generator, dtype=torch.float64)
                counts = survivor_counts(probs.expand(shards, count), batch_size, draws[0], draws[1])
            else:
                counts = subset_sizes(probs, batch_size).expand(shards, count)
            order = torch.rand(shards, count, batch_size, generator=self.generator).argsort(dim=2)
            keep = torch.zeros(shards, count, batch_size, dtype=torch.bool)
            keep.scatter_(2, order, torch.arange(batch_size).expand(shards, count, -1) < counts[..., None])
            self.branches_run += counts.sum().item() / (batch_size * shards)
            runs_anywhere = (counts.sum(dim=0) > 0).tolist()
            keep, counts = keep[shard], counts[shard]
            flat = keep.nonzero()[:, 1]
            if device.type == "cuda":
                flat = flat.pin_memory()
            flat = flat.to(device, non_blocking=True)
            sizes = counts.tolist()
            ends = counts.cumsum(0).tolist()
            survives = [size > 0 for size in sizes]
            rows = [None if size in (0, batch_size) else flat[end - size : end] for size, end in zip(sizes, ends)]
        self.step = StepGates(survives, rows, batch_size, runs_anywhere)
        return self.step

    @torch.compiler.disable
    def gate(self, index: int, batch_size: int, device: torch.device) -> tuple[bool, torch.Tensor | None]:
        """Branch ``index``'s gate in this step: (runs at all, rows it runs on or ``None`` for all).

        The step's gates are drawn by the first request after :meth:`begin_step` (or for a
        batch of another size); later requests, a recomputation's included, reuse them.
        Never compiled: a host decision, drawn eagerly under ``torch.compile``.
        """
        step = self.step
        if step is None:
            self.agree_across_ranks()
            self.set_steps_taken(self.steps_taken + 1)
        if step is None or step.batch_size != batch_size:
            step = self.draw_step(batch_size, device)
        return step.survives[index], step.rows[index]

    @contextlib.contextmanager
    def running_every_block(self) -> Iterator[None]:
        """Within the block every branch runs, scaled as in evaluation, whatever the modules' training flags.

        Contexts may nest and close in any order: every branch runs while any is open.
        """
        self.every_block_requests += 1
        try:
            yield
        finally:
            self.every_block_requests -= 1

    def state_dict(self) -> dict[str, object]:
        """The seed, the generator's state, the steps taken and (to rebuild the schedule) the steps planned."""
        return {
            "seed": self.seed,
            "state": self.generator.get_state(),
            "steps_taken": self.steps_taken,
            "total_steps": self.time_schedule.total_steps,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Continue the gate sequence of ``state`` (a state without ``steps_taken``, from before time schedules: 0).

        The schedule stays this generator's own (a run resumed with more epochs plans more steps).
        """
        if not isinstance(state, dict) or not {"seed", "state"} <= set(state):
            raise ValueError("gate state: must hold 'seed' and 'state'")
        steps, seed, generator_state = state.get("steps_taken", 0), state["seed"], state["state"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"gate state: steps_taken must be a non-negative integer, got {steps!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ValueError(f"gate state: seed must be an integer in [0, 2**64), got {seed!r}")
        expected = self.generator.get_state()
        if (
            not isinstance(generator_state, torch.Tensor)
            or generator_state.dtype != torch.uint8
            or generator_state.shape != expected.shape
        ):
            raise ValueError("gate state: 'state' is not a CPU generator's state")
        try:
            self.generator.set_state(generator_state)
        except RuntimeError:
            self.generator.set_state(expected)
            raise ValueError("gate state: 'state' is not a valid generator state") from None
        self.seed = seed
        self.step = None
        self.set_steps_taken(steps)

    def __getstate__(self) -> dict[str, object]:
        """Plain Python values only, so a converted module pickles and crosses ``torch.multiprocessing``."""
        schedule = self.time_schedule
        return {
            "seed": self.seed,
            "state": bytes(self.generator.get_state().tolist()),
            "survival_probs": self.depth_probs,
            "drop_mode": self.drop_mode,
            "scaling": self.scaling,
            "time_schedule": (schedule.kind, schedule.fraction, schedule.total_steps),
            "steps_taken": self.steps_taken,
            "agreed_across_ranks": self.agreed_across_ranks,
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        schedule = TimeSchedule(*state["time_schedule"])
        self.__init__(int(state["seed"]), state["survival_probs"], state["drop_mode"], state["scaling"], schedule)
        self.generator.set_state(torch.tensor(list(state["state"]), dtype=torch.uint8))
        self.set_steps_taken(state["steps_taken"])
        self.agreed_across_ranks = state["agreed_across_ranks"]
