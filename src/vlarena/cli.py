"""The `vlarena` command: train, evaluate and compare models, export datasets, run components."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlarena.errors import UserInputError

JOB_COMMANDS = ("train", "evaluate", "compare")


def _value(text: str) -> Any:
    """A command-line value: JSON when it parses (numbers, lists, booleans), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"vlarena: {flag} takes KEY=VALUE, got {item!r}")
        out[key] = _value(value)
    return out


def _dataset_spec(name_or_path: str, options: dict[str, Any]) -> dict[str, Any]:
    from vlarena.data.registry import builtin_names

    if name_or_path in builtin_names():
        return {"name": name_or_path, "options": options}
    if options:
        raise SystemExit("vlarena: --dataset-option applies to built-in datasets only")
    return {"uri": str(Path(name_or_path).resolve())}


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset", required=True, help="a built-in (emoji, fashion-grid) or a manifest .jsonl"
    )
    p.add_argument(
        "--dataset-option",
        action="append",
        metavar="KEY=VALUE",
        help="option of a built-in dataset, e.g. n_train=2000 (repeatable)",
    )
    p.add_argument("--preset", default=None, help="model size: tiny, small (default) or base")
    p.add_argument(
        "--config",
        action="append",
        metavar="KEY=VALUE",
        help='model config override, e.g. vocabulary=full or x_encoder={"name":"vit"}',
    )
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-samples", type=int, help="training samples to see")
    budget.add_argument("--budget-steps", type=int, help="optimiser steps to take")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, dest="learning_rate")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--vqa-fraction", type=float, help="share of question examples when the data has questions"
    )
    p.add_argument(
        "--eval",
        action="append",
        metavar="KEY=VALUE",
        help="evaluation option, e.g. maxImages=200 or retrievalPools=[100,1000]",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output directory (resumed if it holds a checkpoint)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _job_spec(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    config = _pairs(args.config, "--config")
    if args.preset:
        config["preset"] = args.preset
    hyper = {
        key: getattr(args, attr)
        for key, attr in (
            ("batchSize", "batch_size"),
            ("learningRate", "learning_rate"),
            ("warmupSteps", "warmup_steps"),
            ("seed", "seed"),
            ("vqaFraction", "vqa_fraction"),
        )
        if getattr(args, attr) is not None
    }
    budget = (
        {"samples": args.budget_samples} if args.budget_samples else {"steps": args.budget_steps}
    )
    spec: dict[str, Any] = {
        "type": kind,
        "dataset": _dataset_spec(args.dataset, _pairs(args.dataset_option, "--dataset-option")),
        "hyperparameters": hyper,
        "budget": budget,
        "evaluation": _pairs(args.eval, "--eval"),
    }
    if kind == "train":
        spec["model"] = {"family": args.model, "config": config}
    else:
        spec["model"] = {"config": config}
        spec["families"] = args.families.split(",") if args.families else None
        spec["seeds"] = args.seeds
    return spec


class ProgressPrinter:
    """Turns job events into a progress bar (or plain lines) on the terminal."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.quiet = quiet or not self.console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=self.console,
            disable=self.quiet,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressPrinter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        tag = " ".join(str(event[k]) for k in ("family", "seed") if k in event) or "train"
        kind = event.get("type")
        if kind == "progress":
            info = f"loss {event['loss']:.3f} · {event['samplesPerSecond']:.0f} samples/s"
            if tag not in self.tasks:
                self.tasks[tag] = self.progress.add_task(
                    tag, total=event["totalSamples"], info=info
                )
            self.progress.update(self.tasks[tag], completed=event["samplesSeen"], info=info)
            if self.quiet and (event["percent"] >= 100.0 or event["step"] % 100 == 0):
                self.console.print(
                    f"[{tag}] step {event['step']}/{event['totalSteps']} · {event['samplesSeen']} samples · {info}"
                )
        elif kind == "log":
            self.console.print(f"[{tag}] {event['message']}", markup=False)
        elif kind == "metrics":
            shown = {k: round(v, 4) for k, v in event["metrics"].items() if isinstance(v, float)}
            self.console.print(
                f"[{tag}] metrics at {event['samplesSeen']} samples: {shown}", markup=False
            )


def cmd_job(args: argparse.Namespace) -> int:
    from vlarena.evaluation.tables import print_metrics_table
    from vlarena.training.jobs import execute_job

    spec = _job_spec(args, args.command)
    with ProgressPrinter(args.quiet) as printer:
        execute_job(spec, args.out, on_event=printer)
    metrics = args.out / "metrics.json"
    if metrics.exists():
        print_metrics_table(json.loads(metrics.read_text()))
        print(f"results: {metrics}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vlarena.evaluation.tables import print_evaluation
    from vlarena.training.jobs import _write_json, evaluate_run

    dataset = (
        _dataset_spec(args.dataset, _pairs(args.dataset_option, "--dataset-option"))
        if args.dataset
        else None
    )
    with ProgressPrinter(True) as printer:
        result = evaluate_run(args.run_dir, dataset, _pairs(args.eval, "--eval"), printer)
    out = args.out or (args.run_dir / "evaluation.json")
    _write_json(out, result)
    print_evaluation(result)
    print(f"results: {out}")
    return 0


def cmd_data_export(args: argparse.Namespace) -> int:
    from vlarena.data.export import export_dataset

    manifest = export_dataset(args.name, args.dir, **_pairs(args.option, "--option"))
    print(manifest)
    return 0


def cmd_gpu_check(args: argparse.Namespace) -> int:
    from vlarena.training.gpu_check import gpu_check

    return gpu_check(args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlarena", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one model")
    p.add_argument("--model", required=True, help="model family: token-vlm or vl-jepa")
    _add_run_options(p)
    p.set_defaults(func=cmd_job)

    p = sub.add_parser("compare", help="train every family on the same data and budget over seeds")
    p.add_argument("--families", help="comma-separated families (default: all)")
    p.add_argument("--seeds", type=int, default=3)
    _add_run_options(p)
    p.set_defaults(func=cmd_job)

    p = sub.add_parser("evaluate", help="evaluate a trained run on a test split")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--dataset", help="a built-in or a manifest (default: the run's own)")
    p.add_argument("--dataset-option", action="append", metavar="KEY=VALUE")
    p.add_argument("--eval", action="append", metavar="KEY=VALUE")
    p.add_argument(
        "--out", type=Path, help="where to write the results (default RUN_DIR/evaluation.json)"
    )
    p.set_defaults(func=cmd_evaluate)

    data = sub.add_parser("data", help="datasets").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("export", help="write a built-in dataset as manifest.jsonl + images")
    p.add_argument("name")
    p.add_argument("dir", type=Path)
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="e.g. n_train=1000")
    p.set_defaults(func=cmd_data_export)

    p = sub.add_parser("gpu-check", help="a tiny train + evaluate on CUDA")
    p.add_argument("--out", type=Path, default=Path("gpu-check-out"))
    p.set_defaults(func=cmd_gpu_check)

    # Each component adds its own commands. Their modules import nothing heavy at the top, so
    # `vlarena gateway` starts in the torch-free gateway image.
    from vlarena.client.cli import register as register_platform
    from vlarena.demo import register as register_demo
    from vlarena.evaluation.report.cli import register as register_report
    from vlarena.serving.cli import register as register_serving

    register_platform(sub)
    register_serving(sub)
    register_report(sub)
    register_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (UserInputError, ValueError, FileNotFoundError) as exc:
        print(f"vlarena: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
