"""The ``stochdepth`` command line: a thin layer over the library.

Errors a user can cause (bad options, missing data, damaged files) end with one line on
stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

import torch

from stochdepth.analysis.report import write_report
from stochdepth.analysis.sweep import SWEEP_OPTIONS, run_sweep
from stochdepth.config import TrainConfig, option_fields
from stochdepth.data import build_loaders
from stochdepth.depth import fold_survival
from stochdepth.export import EXPORT_FORMATS, export_model
from stochdepth.models import list_models
from stochdepth.train.recipes import list_presets, preset
from stochdepth.train.trainer import TrainingStopped, error_rate, load_trained_model, resume, train


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
    parser = argparse.ArgumentParser(
        prog="stochdepth", description="Train very deep residual networks with stochastic depth."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list models and presets")

    train = commands.add_parser("train", help="train a network (a preset, or options)")
    train.add_argument("--preset", help=f"start from a paper recipe: {', '.join(list_presets())}")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR (with --epochs N: extend it)")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")
    _add_config_flags(train)

    evaluate = commands.add_parser("eval", help="test error of a saved run")
    evaluate.add_argument("run", help="run folder")
    evaluate.add_argument("--checkpoint", choices=("best", "last"), default="best")
    evaluate.add_argument("--device", default=None)

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
    export.add_argument("run", help="run folder")
    export.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    export.add_argument("--out", required=True, help="file to write")
    export.add_argument("--checkpoint", choices=("best", "last"), default="best")
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
    return (preset(preset_name) if preset_name else TrainConfig()).override(**options)


def _sweep(args: argparse.Namespace) -> None:
    options = _options(args)
    out = options.pop("out", None)
    if out is None:
        raise ValueError("sweep needs --out DIR (the folder that holds its runs)")
    grid = {name: options.pop(name) for name in SWEEP_OPTIONS if name in options}
    done = run_sweep(_base_config(args.preset, options), grid, out, progress=args.progress)
    print(f"sweep {out}: " + ", ".join(f"{sum(v == s for v in done.values())} {s}" for s in sorted(set(done.values()))))


def _reproduce(args: argparse.Namespace) -> None:
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    options = _options(args)
    out = Path(options.pop("out", None) or Path("runs") / f"reproduce-{args.preset}")
    base = _base_config(args.preset, options)
    rule = base.model.survival_rule or "linear"
    grid = {"survival_rule": [rule, "none"], "seed": list(range(1, args.seeds + 1))}
    run_sweep(base, grid, out, progress=args.progress)
    report, _ = write_report([out / "runs"], out / "report")
    print(f"report: {report}")


def _report(args: argparse.Namespace) -> None:
    report, warnings = write_report(args.runs, args.out)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"report: {report}")


def _train(args: argparse.Namespace) -> None:
    options = _options(args)
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
        summary = train(config, progress=args.progress)
        out = config.run.out
    print(
        f"test error at best validation (epoch {summary['best_epoch']:g}): {summary['test_error_at_best_val']:.4f}; "
        f"final test error: {summary['final_test_error']:.4f}; run folder: {out}"
    )


def _evaluate(args: argparse.Namespace) -> None:
    model, values = load_trained_model(args.run, args.checkpoint, args.device)
    config = TrainConfig.from_dict(values)
    device = next(model.parameters()).device
    loaders = build_loaders(config.data, config.optim.batch_size, device, config.run.seed)
    test_error = error_rate(model, loaders.test, contextlib.nullcontext, False)
    print(f"{args.run} ({args.checkpoint} checkpoint): test error {test_error:.4f}")


def _export(args: argparse.Namespace) -> None:
    model, values = load_trained_model(args.run, args.checkpoint, "cpu")
    shape = values["data_shape"]
    example = torch.randn(2, shape["in_channels"], shape["image_size"], shape["image_size"])
    path = export_model(fold_survival(model), example, args.out, args.format)
    print(f"wrote {args.format} of the folded network to {path}")


def _list(args: argparse.Namespace) -> None:
    print("models:  " + " ".join(list_models()))
    print("presets: " + " ".join(list_presets()))


COMMANDS = {
    "list": _list,
    "train": _train,
    "sweep": _sweep,
    "reproduce": _reproduce,
    "report": _report,
    "eval": _evaluate,
    "export": _export,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except ValueError as error:
        print(f"stochdepth: error: {error}", file=sys.stderr)
        return 2
    except TrainingStopped as stop:
        print(f"stochdepth: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("stochdepth: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
