"""The commands that run experiments on this machine: `train`, `compare`, `run-job`, `evaluate`,
`report`, `selective-decoding`, `export` and `gpu-check`.

Every job command builds the same typed job spec the API takes: its flags name spec fields,
`--set dotted.key=value` reaches every other field, and the spec is validated before anything
runs. Heavy imports (torch) happen inside the commands, after parsing."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import webbrowser
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from vlarena.errors import UserInputError
from vlarena.events import (
    ArtifactEvent,
    Event,
    LogEvent,
    MetricEvent,
    ProgressEvent,
    as_dict,
    describe,
    ignore,
)
from vlarena.jobs.spec import AnyJobSpec, parse_job_spec
from vlarena.rundirs import JobDir, RunDir

# Flags that set a spec field, by the field's dotted (camelCase) path.
RUN_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--batch-size", "hyperparameters.batchSize", int, "training batch size"),
    ("--lr", "hyperparameters.learningRate", float, "peak learning rate"),
    ("--warmup-steps", "hyperparameters.warmupSteps", int, "linear warmup steps"),
    ("--seed", "hyperparameters.seed", int, "seed (a compare job's first seed)"),
    (
        "--vqa-fraction",
        "hyperparameters.vqaFraction",
        float,
        "share of question examples when the data has questions",
    ),
)


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses (numbers, lists, booleans), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def key_values(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key] = parse_value(value)
    return out


def set_dotted(spec: dict[str, Any], dotted: str, value: Any) -> None:
    """Sets `a.b.c` in a nested spec dict, creating the objects on the way."""
    *parents, last = dotted.split(".")
    node = spec
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserInputError(
                f"--set {dotted}: {'.'.join(parents[: i + 1])} is not an object in the spec"
            )
        node = child
    node[last] = value


def dataset_field(name_or_path: str, options: dict[str, Any]) -> dict[str, Any]:
    """A spec's `dataset`: a built-in by name, or a manifest path (made absolute)."""
    from vlarena.data.registry import builtin_names

    if name_or_path in builtin_names():
        return {"name": name_or_path, "options": options}
    if options:
        raise UserInputError("--dataset-option applies to built-in datasets only")
    return {"uri": str(Path(name_or_path).resolve())}


def sweep_budgets(text: str) -> list[dict[str, int]]:
    """The spec's `budgets` from `--budgets 5000,20000` (samples each)."""
    try:
        return [{"samples": int(item)} for item in text.split(",")]
    except ValueError:
        raise UserInputError(
            f"--budgets takes sample counts separated by commas, e.g. 5000,20000; got {text!r}"
        ) from None


def job_spec_from_args(args: argparse.Namespace, kind: str) -> AnyJobSpec:
    """The typed job spec of a `train` or `compare` command line."""
    config = key_values(args.config, "--config")
    if args.preset:
        config["preset"] = args.preset
    spec: dict[str, Any] = {
        "type": kind,
        "dataset": dataset_field(args.dataset, key_values(args.dataset_option, "--dataset-option")),
        "evaluation": key_values(args.eval, "--eval"),
    }
    if args.budget_samples is not None:
        spec["budget"] = {"samples": args.budget_samples}
    elif args.budget_steps is not None:
        spec["budget"] = {"steps": args.budget_steps}
    if kind == "train":
        spec["model"] = {"family": args.model, "config": config}
    else:
        spec["model"] = {"config": config}
        for item in args.family_config or []:
            family, sep, pair = item.partition(":")
            if not sep:
                raise UserInputError(
                    f"--family-config takes FAMILY:KEY=VALUE, e.g. vl-jepa:y_lr_mult=0.05; got {item!r}"
                )
            own = spec["model"].setdefault("families", {}).setdefault(family, {})
            own |= key_values([pair], "--family-config")
        if args.families:
            spec["families"] = args.families.split(",")
        if args.budgets:
            spec["budgets"] = sweep_budgets(args.budgets)
        spec["seeds"] = args.seeds
    for _flag, dotted, _type, _help in RUN_FLAGS:
        if (value := getattr(args, dotted)) is not None:
            set_dotted(spec, dotted, value)
    for dotted, value in key_values(args.set, "--set").items():
        set_dotted(spec, dotted, value)
    return parse_job_spec(spec, "command line")


def spec_from_file(path: Path, overrides: Sequence[str] | None = None) -> AnyJobSpec:
    """A typed job spec from a YAML or JSON file, with `--set` overrides."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read the job spec ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise UserInputError(f"{path}: not YAML or JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: a job spec is a mapping of fields")
    for dotted, value in key_values(overrides, "--set").items():
        set_dotted(data, dotted, value)
    return parse_job_spec(data, str(path))


class ProgressPrinter:
    """Renders job events on the terminal: a progress bar per run and phase (each run's own
    samples), log lines and metrics; plain lines when quiet or not on a terminal."""

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

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.progress.__exit__(kind, error, trace)

    def __call__(self, event: Event) -> None:
        tag = event.run.label() if event.run else "job"
        if isinstance(event, ProgressEvent):
            self._progress(tag, event)
        elif isinstance(event, LogEvent):
            self.console.print(f"[{tag}] {event.message}", markup=False)
        elif isinstance(event, MetricEvent) or (
            isinstance(event, ArtifactEvent) and event.kind != "checkpoint"
        ):
            self.console.print(describe(event), markup=False)

    def _progress(self, tag: str, event: ProgressEvent) -> None:
        info = f"{event.unit}"
        if event.loss is not None:
            info = f"loss {event.loss:.3f}"
        if event.per_second is not None:
            info += f" · {event.per_second:.0f} {event.unit}/s"
        key = f"{tag} {event.phase}"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(key, total=event.total, info=info)
        self.progress.update(self.tasks[key], completed=event.done, total=event.total, info=info)
        every_hundred = event.step is not None and event.step % 100 == 0
        if self.quiet and event.phase == "train" and (event.percent >= 100.0 or every_hundred):
            self.console.print(
                f"[{tag}] step {event.step}/{event.total_steps} · {event.done} of "
                f"{event.total} samples · {info}",
                markup=False,
            )


def _print_json(event: Event) -> None:
    print(json.dumps(as_dict(event), default=str), flush=True)


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


class StepLimit:
    """A `should_stop` that asks for a stop once `steps` optimiser steps ran in this process (or
    never, without `steps`).

    The training loop polls once before every step: the (steps + 1)-th such poll asks for a
    stop. A job also polls right after each progress report of its other phases; the sink that
    `watch` wraps sees those reports, so the polls that follow them are not counted as steps.
    """

    def __init__(self, steps: int | None) -> None:
        if steps is not None and steps < 1:
            raise UserInputError(f"--stop-after-steps must be at least 1, got {steps}")
        self.steps = steps
        self.polls = 0
        self._after_report = False

    def watch(self, sink: Callable[[Event], None]) -> Callable[[Event], None]:
        def watching(event: Event) -> None:
            sink(event)
            self._after_report = isinstance(event, ProgressEvent) and event.phase != "train"

        return watching

    def __call__(self) -> bool:
        if self.steps is None:
            return False
        if self._after_report:
            self._after_report = False
        else:
            self.polls += 1
        return self.polls > self.steps


def _run(
    spec: AnyJobSpec,
    out: Path,
    sink: Callable[[Event], None],
    stop_after: int | None,
    force: bool,
    confined: bool = False,
) -> dict[str, Any] | None:
    """Runs the job; None when it stopped on request (the same command resumes). `confined`:
    under the policy of jobs submitted through the gateway (what a cluster pod runs)."""
    from vlarena.experiments.jobs import StopRequested, run_job
    from vlarena.jobs.confinement import Confinement
    from vlarena.settings import get_settings

    confinement = Confinement.from_settings(get_settings()) if confined else None
    limit = StepLimit(stop_after)
    try:
        return run_job(
            spec,
            out,
            on_event=limit.watch(sink),
            should_stop=limit,
            force=force,
            confinement=confinement,
        )
    except StopRequested as stop:
        if _is_main_rank():
            print(f"vlarena: {stop}; run the same command to resume", file=sys.stderr)
        return None


def cmd_job(args: argparse.Namespace) -> int:
    spec = job_spec_from_args(args, args.command)
    if (code := _under_torchrun(args)) is not None:
        return code
    from vlarena.evaluation.tables import print_metrics_table
    from vlarena.files import read_json

    with ProgressPrinter(args.quiet) as printer:
        sink = printer if _is_main_rank() else ignore
        result = _run(spec, args.out, sink, args.stop_after_steps, args.force)
    if result is None or not _is_main_rank():
        return 0
    metrics = JobDir(args.out).metrics
    if metrics.exists():
        doc = read_json(metrics)
        print_metrics_table(doc)
        if doc.get("sweep"):
            from vlarena.evaluation.report.comparison import sweep_of
            from vlarena.evaluation.report.sweep import sweep_lines

            print("\n".join(sweep_lines(sweep_of(doc))))
        print(f"results: {metrics}")
    return 0


def cmd_run_job(args: argparse.Namespace) -> int:
    spec = spec_from_file(args.spec, args.set)
    if (code := _under_torchrun(args)) is not None:
        return code
    from vlarena.files import write_json

    main_rank = _is_main_rank()
    with ProgressPrinter(args.quiet) as printer:
        sink = (_print_json if args.events else printer) if main_rank else ignore
        result = _run(spec, args.out, sink, args.stop_after_steps, args.force, args.confined)
    if main_rank and result is not None:
        write_json(JobDir(args.out).job_result, result)
        if not args.events:
            print(f"result: {JobDir(args.out).job_result}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vlarena.evaluation.tables import print_evaluation
    from vlarena.experiments.configs import eval_config
    from vlarena.experiments.runs import evaluate_run
    from vlarena.files import write_json

    run = RunDir.resolve(args.run_dir)
    spec: dict[str, Any] = {
        "type": "evaluate",
        "source": {"runDir": str(run.path.resolve())},
        "evaluation": key_values(args.eval, "--eval"),
        "allRecordsAreTest": args.all_test,
    }
    if args.dataset:
        spec["dataset"] = dataset_field(
            args.dataset, key_values(args.dataset_option, "--dataset-option")
        )
    for dotted, value in key_values(args.set, "--set").items():
        set_dotted(spec, dotted, value)
    typed = parse_job_spec(spec, "command line")
    assert typed.type == "evaluate"
    with ProgressPrinter(True) as printer:
        result = evaluate_run(
            run,
            typed.dataset,
            eval_config(typed.evaluation),
            printer,
            all_test=typed.all_records_are_test,
        )
    out = args.out or (JobDir(args.run_dir).evaluation if args.run_dir.is_dir() else run.evaluation)
    write_json(out, result)
    print_evaluation(result)
    print(f"results: {out}")
    return 0


def _print_log(event: Event) -> None:
    if isinstance(event, LogEvent):
        print(event.message, file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> int:
    from vlarena.evaluation.report.page import PAGE_FILE
    from vlarena.evaluation.report.report import ReportConfig, load_nodes, verdict_lines
    from vlarena.evaluation.report.selective import SelectiveConfig
    from vlarena.experiments.reports import write_report

    job = JobDir(args.run_dir)
    if not job.metrics.is_file():
        raise UserInputError(
            f"no {job.metrics.name} in {args.run_dir} (give a compare job's output directory)"
        )
    cfg = ReportConfig(
        probes=not args.no_probes,
        probe_images=args.probe_images,
        selective=SelectiveConfig(streams=args.streams) if args.streams > 0 else None,
    )
    if args.node_prices:
        cfg.nodes = load_nodes(args.node_prices)
    out = args.out or job.report
    write_report(job, out, cfg=cfg, on_event=_print_log if args.verbose_report else ignore)
    for line in verdict_lines(out):
        print(f"- {line}")
    page = (out / PAGE_FILE).resolve()
    print(f"report: {page}")
    if args.open:
        webbrowser.open(page.as_uri())
    return 0


def _embedding_run(path: Path) -> RunDir:
    """A run whose model predicts embeddings: the path's own run, or the first such family's
    first-seed run in a compare job's directory."""
    from vlarena.files import read_json
    from vlarena.models.registry import load_model

    job = JobDir(path)
    if path.is_dir() and job.metrics.is_file():
        for family, body in read_json(job.metrics).get("families", {}).items():
            run = job.seed_run(family, body["seeds"][0]["seed"])
            if run.model.is_file() and hasattr(load_model(run.model), "decode_embeddings"):
                return run
        raise UserInputError(f"{path}: no family of this comparison decodes embeddings")
    return RunDir.resolve(path)


def cmd_selective(args: argparse.Namespace) -> int:
    from vlarena.evaluation.report.selective import SelectiveConfig, curve_lines, selective_decoding
    from vlarena.experiments.features import frame_encoder
    from vlarena.experiments.inputs import open_dataset
    from vlarena.experiments.runs import trained_dataset
    from vlarena.experiments.runtime import apply_thread_setting, configured_threads
    from vlarena.files import write_json
    from vlarena.models.registry import load_model

    apply_thread_setting()
    run = _embedding_run(args.model)
    model = load_model(run.model)
    if not (hasattr(model, "predict_embedding") and hasattr(model, "decode_embeddings")):
        raise UserInputError(
            f"{args.model}: selective decoding needs a model that predicts and decodes "
            "embeddings (vl-jepa)"
        )
    cfg = SelectiveConfig(streams=args.streams, seed=args.seed, representation=args.representation)
    encode = (
        frame_encoder(model.x_encoder, configured_threads()) if model.x_encoder.frozen else None
    )
    test = open_dataset(trained_dataset(run)).split("test")
    result = selective_decoding(model, test, cfg, encode)
    print("\n".join(curve_lines(result)))
    if args.out:
        write_json(args.out, result, indent=1)
        print(f"results: {args.out}")
    return 0


def _runs_to_export(path: Path) -> list[RunDir]:
    """A training run, or each run in a compare job's directory."""
    try:
        return [RunDir.resolve(path)]
    except FileNotFoundError:
        found = JobDir(path).seed_runs()
        if not found:
            raise
        return found


def cmd_export(args: argparse.Namespace) -> int:
    from vlarena.experiments.exports import export_run
    from vlarena.serving.quantize import weight_range

    weights = weight_range(args.int8_weights) if args.int8_weights else None
    runs = _runs_to_export(args.run_dir)
    if args.out and len(runs) > 1:
        raise UserInputError(f"{args.run_dir} holds {len(runs)} models: --out takes one")
    for run in runs:
        manifest = export_run(
            run,
            out_dir=args.out,
            calibration_images=args.calibration_images,
            accuracy_images=args.accuracy_images,
            int8_weights=weights,
            on_event=_print_log,
        )
        deltas = {
            p: e["deltaPoints"]
            for p, e in manifest.accuracy.get("precisions", {}).items()
            if p != "fp32"
        }
        print(
            json.dumps(
                {
                    "export": str(manifest.directory),
                    "family": manifest.family,
                    "parts": sorted(manifest.parts),
                    "parityOk": manifest.parity.get("ok"),
                    "accuracyDeltaPoints": deltas,
                    "recipes": manifest.parts["vision"].recipes,
                }
            )
        )
    return 0


def cmd_gpu_check(args: argparse.Namespace) -> int:
    from vlarena.experiments.gpu_check import gpu_check

    return gpu_check(args.out)


def _add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="any job-spec field by its dotted path, e.g. hyperparameters.weightDecay=0.05 or "
        "evaluation.retrievalPools=[100] (repeatable; values parse as JSON when they can)",
    )


def _add_stop_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stop-after-steps",
        type=int,
        metavar="N",
        help="checkpoint and exit after N optimiser steps; the same command resumes",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="retrain runs in --out that another spec made (otherwise they are refused)",
    )


def _add_nodes_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="data-parallel processes on this machine (torchrun --nnodes 1 --nproc-per-node N, "
        "gloo on CPUs); the global batch stays --batch-size",
    )


def _add_run_options(p: argparse.ArgumentParser, sweep: bool = False) -> None:
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
    if sweep:
        budget.add_argument(
            "--budgets",
            metavar="SAMPLES,...",
            help="a budget sweep, e.g. 5000,20000: every family and seed trains at each budget "
            "with its own schedule, and the report says at which one a family overtakes the other",
        )
    for flag, dotted, kind, text in RUN_FLAGS:
        p.add_argument(flag, dest=dotted, type=kind, help=text)
    p.add_argument(
        "--eval",
        action="append",
        metavar="KEY=VALUE",
        help="evaluation option, e.g. maxImages=200 or retrievalPools=[100,1000]",
    )
    _add_set_option(p)
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output directory (resumed if it holds a checkpoint)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_stop_option(p)


def register(sub: Any) -> None:
    """Adds the experiment commands to the `vlarena` command's subparsers."""
    p = sub.add_parser("train", help="train one model")
    p.add_argument("--model", required=True, help="model family: token-vlm or vl-jepa")
    _add_run_options(p)
    _add_nodes_option(p)
    p.set_defaults(func=cmd_job)

    p = sub.add_parser("compare", help="train every family on the same data and budget over seeds")
    p.add_argument("--families", help="comma-separated families (default: all)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--family-config",
        action="append",
        metavar="FAMILY:KEY=VALUE",
        help="one family's config override, over --config: vl-jepa:y_lr_mult=0.05, "
        "token-vlm:vocabulary=full (repeatable)",
    )
    _add_run_options(p, sweep=True)
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
    p.add_argument(
        "--confined",
        action="store_true",
        help="read only what a job submitted through the gateway may (the data roots and image "
        "URL settings, VLARENA_*): how the pods of a multi-node job run it",
    )
    _add_set_option(p)
    _add_stop_option(p)
    _add_nodes_option(p)
    p.set_defaults(func=cmd_run_job)

    p = sub.add_parser("evaluate", help="evaluate a trained run on a test split")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--dataset", help="a built-in or a manifest (default: the run's own)")
    p.add_argument("--dataset-option", action="append", metavar="KEY=VALUE")
    p.add_argument("--eval", action="append", metavar="KEY=VALUE")
    p.add_argument(
        "--all-test",
        action="store_true",
        help="take every record of --dataset as test data, whatever its split field",
    )
    _add_set_option(p)
    p.add_argument(
        "--out", type=Path, help="where to write the results (default RUN_DIR/evaluation.json)"
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="write the comparison report of a compare job")
    p.add_argument(
        "run_dir", type=Path, help="a compare job's output directory (with metrics.json)"
    )
    p.add_argument("--out", type=Path, help="report directory (default RUN_DIR/report)")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.add_argument(
        "--no-probes", action="store_true", help="only what metrics.json holds: no model loading"
    )
    p.add_argument(
        "--probe-images", type=int, default=200, help="test images for maps and confusion"
    )
    p.add_argument("--streams", type=int, default=64, help="selective-decoding streams (0: skip)")
    p.add_argument(
        "--node-prices",
        type=Path,
        help="JSON list of nodes: name, device, usdPerHour, vcpus, gpus, source",
    )
    p.add_argument("--verbose-report", action="store_true", help="print progress")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "selective-decoding",
        help="the selective-decoding stream benchmark: CIDEr against decoding operations",
    )
    p.add_argument(
        "model",
        type=Path,
        help="a VL-JEPA model file, its run directory, or a compare job's directory",
    )
    p.add_argument("--streams", type=int, default=64, help="streams (fewer: a noisier ratio)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--representation", choices=("mean", "midpoint"), default="mean")
    p.add_argument("--out", type=Path, help="write the curve and ratios as JSON")
    p.set_defaults(func=cmd_selective)

    p = sub.add_parser(
        "export",
        help="export a trained run for serving: ONNX graphs, FP16/INT8 variants, serving.json",
    )
    p.add_argument("run_dir", type=Path, help="a training run (or a compare job's) directory")
    p.add_argument("--out", type=Path, help="export directory (default RUN/export)")
    p.add_argument("--calibration-images", type=int, default=64, help="training images for INT8")
    p.add_argument(
        "--accuracy-images", type=int, default=200, help="test images for the accuracy deltas"
    )
    p.add_argument(
        "--int8-weights",
        choices=("auto", "full", "reduced"),  # quantize.WEIGHT_RANGE_CHOICES, without onnx
        help="INT8 weight range: reduced (7-bit) for x86 CPUs without VNNI; default: the "
        "int8_weights setting (auto: from this machine's CPU)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("gpu-check", help="a tiny train + evaluate on CUDA")
    p.add_argument("--out", type=Path, default=Path("gpu-check-out"))
    p.set_defaults(func=cmd_gpu_check)
