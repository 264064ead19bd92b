"""The ``stochdepth`` command line: a thin layer over the library.

Errors a user can cause (bad options, missing data, damaged files) end with one line on
stderr and exit status 2; anything else is a bug and keeps its traceback. Each command
imports the heavy parts (PyTorch, the data readers, matplotlib) only when it runs, so
``--help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from stochdepth import __version__
from stochdepth.config import EXPORT_FORMATS, SWEEP_OPTIONS, TrainConfig, option_fields
from stochdepth.train.progress import percent
from stochdepth.train.recipes import describe_preset, list_presets, preset


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"stochdepth: error: {message} (see {self.prog} --help)\n")


def _add_config_flags(parser: argparse.ArgumentParser, several: Sequence[str] = ()) -> None:
    """One flag per configuration field (``final_survival_prob`` -> ``--final-survival-prob``).

    Fields named in ``several`` take one or more values (the axes of a sweep).
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for section, option in option_fields():
        group = groups.setdefault(section, parser.add_argument_group(f"{section} options"))
        owner = type(getattr(TrainConfig(), section))
        hint = typing.get_type_hints(owner)[option.name]
        flag = "--" + option.name.replace("_", "-")
        default = " ".join(map(str, option.default)) if isinstance(option.default, tuple) else option.default
        help_text = option.metadata["help"] + (f" (default: {default})" if default is not None else "")
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(hint) is tuple:
            group.add_argument(flag, type=float, nargs="+", default=None, help=help_text)
        else:
            kind = next(arg for arg in typing.get_args(hint) or (hint,) if arg is not type(None))
            nargs = "+" if option.name in several else None
            group.add_argument(flag, type=kind, nargs=nargs, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="stochdepth", description="Train very deep residual networks with stochastic depth.")
    parser.add_argument("--version", action="version", version=f"stochdepth {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    commands.add_parser("list", help="models (family, depth, parameters) and presets (their recipes)")

    train = commands.add_parser("train", help="train a network (a preset, or options)")
    train.add_argument("--preset", help=f"start from a paper recipe: {', '.join(list_presets())}")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR (with --epochs N: extend it)")
    train.add_argument(
        "--auto-resume",
        action="store_true",
        help="resume --out if it already holds a run, else start it (one command line for every restart)",
    )
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")
    _add_config_flags(train)

    evaluate = commands.add_parser("eval", help="test error of a saved run or checkpoint")
    evaluate.add_argument("source", help="run folder, or a checkpoint file (.pt)")
    evaluate.add_argument("--checkpoint", choices=("best", "last"), default="best", help="for a run folder")
    evaluate.add_argument("--device", default=None)
    evaluate.add_argument("--data-dir", default=None, help="where the data lives (default: $STOCHDEPTH_DATA, ./data)")
    evaluate.add_argument(
        "--recalibrate-batchnorm",
        type=int,
        metavar="N",
        help="recompute BatchNorm statistics over the run's first N training images first (every block running)",
    )

    sweep = commands.add_parser("sweep", help="train a grid of runs under one folder (restartable)")
    sweep.add_argument("--preset", help="start every run from this preset")
    sweep.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")
    _add_config_flags(sweep, several=SWEEP_OPTIONS)

    reproduce = commands.add_parser("reproduce", help="a preset and its constant-depth twin, then the report")
    reproduce.add_argument("preset", help=", ".join(list_presets()))
    reproduce.add_argument("--seeds", type=int, default=1, help="seeds per setting (1, 2, ...)")
    reproduce.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")
    _add_config_flags(reproduce)

    report = commands.add_parser("report", help="tables and figures (report.md, PNG) from runs or sweeps")
    report.add_argument("runs", nargs="+", help="run folders or folders holding runs")
    report.add_argument("--out", required=True, help="folder for report.md and the figures")

    export = commands.add_parser("export", help="export a run's folded network (p_l in the weights)")
    export.add_argument("source", help="run folder, or a checkpoint file (.pt)")
    export.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    export.add_argument("--out", required=True, help="file to write")
    export.add_argument("--checkpoint", choices=("best", "last"), default="best", help="for a run folder")
    export.add_argument("--force", action="store_true", help="replace an existing --out file")
    return parser


def _options(args: argparse.Namespace) -> dict[str, object]:
    """The configuration fields given on the command line."""
    options = {
        option.name: getattr(args, option.name)
        for _, option in option_fields()
        if getattr(args, option.name) is not None
    }
    if "lr_milestones" in options:
        options["lr_milestones"] = tuple(options["lr_milestones"])
    return options


def _base_config(preset_name: str | None, options: dict[str, object]) -> TrainConfig:
    return (preset(preset_name) if preset_name is not None else TrainConfig()).override(**options)


def _sweep(args: argparse.Namespace) -> None:
    from stochdepth.analysis.sweep import run_sweep

    options = _options(args)
    out = options.pop("out", None)
    if out is None:
        raise ValueError("sweep needs --out DIR (the folder that holds its runs)")
    grid = {name: options.pop(name) for name in SWEEP_OPTIONS if name in options}
    done = run_sweep(_base_config(args.preset, options), grid, out, progress=args.progress)
    print(f"sweep {out}: " + ", ".join(f"{sum(v == s for v in done.values())} {s}" for s in sorted(set(done.values()))))


def _reproduce(args: argparse.Namespace) -> None:
    from stochdepth.analysis.report import write_report
    from stochdepth.analysis.sweep import run_sweep
    from stochdepth.train.setup import resolve_config

    if not 1 <= args.seeds <= MAX_SEEDS:
        raise ValueError(f"--seeds must be between 1 and {MAX_SEEDS}, got {args.seeds}")
    options = _options(args)
    out = Path(options.pop("out", None) or Path("runs") / f"reproduce-{args.preset}")
    base = _base_config(args.preset, options)
    grid = {"survival_rule": [resolve_config(base).model.survival_rule, "none"], "seed": list(range(1, args.seeds + 1))}
    run_sweep(base, grid, out, progress=args.progress)
    report, _ = write_report([out / "runs"], out / "report")
    print(f"report: {report}")


def _report(args: argparse.Namespace) -> None:
    from stochdepth.analysis.report import write_report

    report, warnings = write_report(args.runs, args.out)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"report: {report}")


def _train(args: argparse.Namespace) -> None:
    from stochdepth.train import resume, train

    options = _options(args)
    if args.resume and args.auto_resume:
        raise ValueError("give --resume DIR or --auto-resume with --out DIR, not both")
    if args.resume:
        extra = sorted(set(options) - {"epochs"}) + (["preset"] if args.preset else [])
        if extra:
            raise ValueError(f"--resume takes the run's own configuration; only --epochs may change (got {extra})")
        summary = resume(args.resume, epochs=options.get("epochs"), progress=args.progress)
        out = args.resume
    else:
        config = _base_config(args.preset, options)
        if config.run.out is None:
            config = config.override(
                out=str(Path("runs") / f"{args.preset or config.model.model}-{config.data.dataset}")
            )
        summary = train(config, progress=args.progress, resume_existing=args.auto_resume)
        out = config.run.out
    if _torchrun_rank() not in (None, 0):
        return
    print(
        f"test error at best validation (epoch {summary['best_epoch']:g}): "
        f"{percent(summary['test_error_at_best_val'])}; final test error: {percent(summary['final_test_error'])}; "
        f"run folder: {out}"
    )
    depth = _depth_line(out)
    if depth:
        print(depth)


def _depth_line(run: str | Path) -> str | None:
    """What stochastic depth did over the run: residual branches run per step, realised and expected."""
    from stochdepth.analysis.runs import expected_blocks_per_step, realised_blocks_per_step
    from stochdepth.train.run_folder import RunFolder

    records = RunFolder(run).read_metrics()
    realised = realised_blocks_per_step(records)
    expected = expected_blocks_per_step(records)
    if realised is None or not expected:
        return None
    blocks = len(json.loads(RunFolder(run).config.read_text()).get("survival_probs", [])) or expected
    return (
        f"stochastic depth: {realised:.2f} of {blocks} residual blocks ran per step on average "
        f"(expected {expected:.2f} from the survival schedule), so training skipped about "
        f"{100 * (1 - realised / blocks):.0f}% of the branch computation of constant depth"
    )


def _evaluate(args: argparse.Namespace) -> None:
    from stochdepth.train import evaluate_test_set

    recalibration = args.recalibrate_batchnorm
    wrong, total, dataset = evaluate_test_set(
        args.source, args.checkpoint, args.device, args.data_dir, sys.stderr.isatty(), recalibration
    )
    statistics = "" if recalibration is None else f", BatchNorm recalibrated over {recalibration:,} training images"
    print(
        f"{args.source}: test error {percent(wrong / total)} ({wrong:,} of {total:,} test images, the whole "
        f"test set{statistics}) on {dataset}"
    )


def _export(args: argparse.Namespace) -> None:
    from stochdepth.export import check_export_target

    out = Path(args.out)
    check_export_target(out, Path(args.source), args.force)
    if args.format == "onnx":
        import importlib.util

        if importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnx") is None:
            raise ValueError("ONNX export needs the onnx extra: pip install 'stochdepth[onnx]'")
    from stochdepth.depth import fold_survival
    from stochdepth.export import export_model
    from stochdepth.train import load_trained_model

    model, config, spec = load_trained_model(args.source, args.checkpoint, "cpu")
    options = {"model": config.model.model, "dropout_rate": config.model.dropout_rate}
    written = export_model(fold_survival(model), spec, out, args.format, options)
    files = ", ".join(map(str, written))
    if args.format == "safetensors":
        print(
            f"wrote the folded network's weights as safetensors: {files} (model and data spec in its metadata; "
            "rebuild it with stochdepth.load_exported)"
        )
        return
    print(
        f"wrote the folded network as {args.format}: {files} (input: images scaled to [0, 1], "
        f"{spec.in_channels}x{spec.image_size}x{spec.image_size}; output: {spec.num_classes} logits)"
    )


def _list(args: argparse.Namespace) -> None:
    from stochdepth.models import list_models, model_info

    print("models (parameters for 10 classes, 3 input channels):")
    for name in list_models():
        info = model_info(name)
        depth = "" if info.residual else "  (no residual blocks: constant depth only)"
        print(f"  {name:<20} {info.family:<22} depth {info.depth:<5} {info.parameters / 1e6:6.2f}M{depth}")
    print(
        "  torchvision/<name>, timm/<name>  a torchvision or timm classification network whose residual blocks are "
        "recognised\n    (ResNet, ConvNeXt, Swin, ViT/DeiT, EVA, EfficientNet, MobileNetV3, RegNet; list the names:\n"
        "    python -c 'import torchvision as tv; print(tv.models.list_models(module=tv.models))', timm.list_models())"
    )
    print("presets:")
    for name in list_presets():
        print(f"  {name:<24} {describe_preset(name)}")


COMMANDS = {
    "list": _list,
    "train": _train,
    "sweep": _sweep,
    "reproduce": _reproduce,
    "report": _report,
    "eval": _evaluate,
    "export": _export,
}


def _torchrun_rank() -> int | None:
    """This process's rank when torchrun started it with others, else ``None`` (also for a malformed environment)."""
    from stochdepth.train.launch import torchrun_place

    try:
        place = torchrun_place()
    except ValueError:
        return None
    return place.rank if place.world_size > 1 else None


def _rank_prefix() -> str:
    rank = _torchrun_rank()
    return "" if rank is None else f"rank {rank}: "


def _report_to_torchrun(error: BaseException) -> None:
    """Under torchrun, leave an unexpected ``error`` (a bug) where torchrun's failure summary shows its traceback.

    Errors a user can cause are one line on stderr, with the rank; torchrun's summary then
    names the rank and exit status only.
    """
    if _torchrun_rank() is None or not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    ErrorHandler().record_exception(error)


MAX_SEEDS = 1000
"""Seeds per setting that ``reproduce`` accepts (each is a full training run)."""

_CONFIG_FIELD = re.compile(r"\b(?:model|data|optim|run)\.([a-z_]+)\b")
_RESUME_HINT = re.compile(r"resume the run in (\S+)")
_KEYWORDS = {"force=True": "--force"}


def as_flags(message: str) -> str:
    """The library names configuration fields (``optim.lr``); the command line's user knows them as flags (``--lr``).

    The one place where the library's words become the command line's: each field name that
    is a flag becomes that flag, and "resume the run in DIR" the command that does it.
    """
    from stochdepth.config import option_fields

    fields = {option.name for _, option in option_fields()}

    def flag(match: re.Match) -> str:
        name = match.group(1)
        return "--" + name.replace("_", "-") if name in fields else match.group(0)

    def command(match: re.Match) -> str:
        if _torchrun_rank() is not None:
            return f"resume with the same torchrun command and --auto-resume, or with --resume {match.group(1)}"
        return f"resume with: stochdepth train --resume {match.group(1)}"

    message = _RESUME_HINT.sub(command, _CONFIG_FIELD.sub(flag, message))
    for keyword, option in _KEYWORDS.items():
        message = message.replace(keyword, option)
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; under torchrun each rank's error names its rank, and a rank stopped by another's is silent."""
    args = build_parser().parse_args(argv)
    from stochdepth.train.signals import PeerFailed, TrainingStopped

    if (_torchrun_rank() or 0) > 0:
        warnings.simplefilter("ignore")  # rank 0 runs the same code and shows the same warnings

    try:
        if _torchrun_rank() is not None and args.command != "train":
            raise ValueError(
                f"under torchrun only 'train' runs; start 'stochdepth {args.command}' as one process "
                "(a sweep's runs can each be trained with torchrun ... -m stochdepth train)"
            )
        COMMANDS[args.command](args)
    except PeerFailed:
        return 1
    except ValueError as error:
        print(f"{_rank_prefix()}stochdepth: error: {as_flags(str(error))}", file=sys.stderr)
        return 2
    except TrainingStopped as stop:
        if _torchrun_rank() in (None, 0):
            print(f"stochdepth: {as_flags(str(stop))}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print(f"{_rank_prefix()}stochdepth: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except Exception as error:
        _report_to_torchrun(error)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
