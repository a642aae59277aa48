"""The `vlarena` command: train, evaluate and compare models, export datasets, run components."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
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
    _add_stop_option(p)


def _add_stop_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stop-after-steps",
        type=int,
        metavar="N",
        help="checkpoint and exit after N optimiser steps; the same command resumes",
    )


def _add_nodes_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="data-parallel processes on this machine (torchrun --nnodes 1 --nproc-per-node N, "
        "gloo on CPUs); the global batch stays --batch-size",
    )


def _ignore(_event: dict[str, Any]) -> None:
    """Events of ranks other than 0, which repeat rank 0's."""


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _under_torchrun(args: argparse.Namespace) -> int | None:
    """Runs this very command again under torchrun when `--nodes` asks for several processes.

    Returns torchrun's exit code, or None when this process should run the job itself.
    """
    if args.nodes < 1:
        raise UserInputError(f"--nodes must be at least 1, got {args.nodes}")
    if args.nodes == 1 or "WORLD_SIZE" in os.environ:
        return None
    from vlarena.training.distributed import torchrun_command

    argv, skip = [], False
    for item in args.argv:
        if skip:
            skip = False
        elif item == "--nodes":
            skip = True
        elif not item.startswith("--nodes="):
            argv.append(item)
    return subprocess.run(torchrun_command(argv, nproc_per_node=args.nodes)).returncode


def _step_limit(steps: int | None) -> Any:
    """A `should_stop` that asks for a stop once `steps` steps ran in this process (or never)."""
    if steps is None:
        return lambda: False
    if steps < 1:
        raise UserInputError(f"--stop-after-steps must be at least 1, got {steps}")
    polls = iter(range(steps))
    # The training loop polls once before every step: the (steps + 1)-th poll asks for a stop.
    return lambda: next(polls, None) is None


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
    if (code := _under_torchrun(args)) is not None:
        return code
    from vlarena.evaluation.tables import print_metrics_table
    from vlarena.training.jobs import execute_job
    from vlarena.training.loop import StopRequested

    spec = _job_spec(args, args.command)
    with ProgressPrinter(args.quiet) as printer:
        try:
            execute_job(
                spec,
                args.out,
                on_event=printer if _is_main_rank() else _ignore,
                should_stop=_step_limit(args.stop_after_steps),
            )
        except StopRequested as stop:
            if _is_main_rank():
                print(f"vlarena: {stop}; run the same command to resume", file=sys.stderr)
            return 0
    if not _is_main_rank():
        return 0
    metrics = args.out / "metrics.json"
    if metrics.exists():
        print_metrics_table(json.loads(metrics.read_text()))
        print(f"results: {metrics}")
    return 0


def cmd_run_job(args: argparse.Namespace) -> int:
    if (code := _under_torchrun(args)) is not None:
        return code
    import yaml
    from pydantic import ValidationError

    from vlarena.jobs.spec import JOB_SPEC_ADAPTER, spec_document
    from vlarena.training.jobs import _write_json, execute_job
    from vlarena.training.loop import StopRequested
    from vlarena.worker.k8s_templates import RESULT_FILE

    try:
        spec = spec_document(
            JOB_SPEC_ADAPTER.validate_python(yaml.safe_load(args.spec.read_text()))
        )
    except ValidationError as exc:
        raise UserInputError(f"{args.spec}: not a valid job spec:\n{exc}") from exc
    main_rank = _is_main_rank()

    def print_json(event: dict[str, Any]) -> None:
        print(json.dumps(event, default=str), flush=True)

    with ProgressPrinter(args.quiet) as printer:
        try:
            result = execute_job(
                spec,
                args.out,
                on_event=(print_json if args.events else printer) if main_rank else _ignore,
                should_stop=_step_limit(args.stop_after_steps),
            )
        except StopRequested as stop:
            if main_rank:
                print(f"vlarena: {stop}; run the same command to resume", file=sys.stderr)
            return 0
    if main_rank:
        _write_json(args.out / RESULT_FILE, result)
        if not args.events:
            print(f"result: {args.out / RESULT_FILE}")
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
    _add_nodes_option(p)
    p.set_defaults(func=cmd_job)

    p = sub.add_parser("compare", help="train every family on the same data and budget over seeds")
    p.add_argument("--families", help="comma-separated families (default: all)")
    p.add_argument("--seeds", type=int, default=3)
    _add_run_options(p)
    p.set_defaults(func=cmd_job, nodes=1)

    p = sub.add_parser(
        "run-job",
        help="run a job spec (YAML/JSON, the API's shape) here, as a cluster node does",
    )
    p.add_argument("spec", type=Path, help="job spec file")
    p.add_argument("--out", required=True, type=Path, help="run directory (resumed if it has one)")
    p.add_argument(
        "--events", action="store_true", help="print progress events as JSON lines on stdout"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_stop_option(p)
    _add_nodes_option(p)
    p.set_defaults(func=cmd_run_job)

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
    args.argv = list(sys.argv[1:] if argv is None else argv)
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
