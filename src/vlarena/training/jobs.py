"""Runs train, evaluate and compare jobs end to end: data, features, training, evaluation,
results files. The CLI and the platform's workers both call `execute_job`."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlarena.data.manifest import Dataset
from vlarena.data.registry import load_dataset
from vlarena.evaluation.evaluate import EvalConfig, evaluate_model, flat_values
from vlarena.models.base import VLModel
from vlarena.models.registry import build_model, family_names, load_model, make_config, save_model
from vlarena.settings import get_settings
from vlarena.training.distributed import (
    DistContext,
    init_distributed,
    resolve_device,
    shutdown_distributed,
)
from vlarena.training.examples import ExampleSource
from vlarena.training.features import cached_features
from vlarena.training.loop import StopRequested, TrainConfig, Trainer

__all__ = ["METRICS_SCHEMA", "StopRequested", "execute_job"]

log = logging.getLogger(__name__)
Event = dict[str, Any]
OnEvent = Callable[[Event], None]
METRICS_SCHEMA = "vlarena.metrics/v1"
MODEL_FILE = "model.pt"

# camelCase job-spec keys → TrainConfig fields
HYPERPARAMETERS = {
    "batchSize": "batch_size",
    "learningRate": "learning_rate",
    "weightDecay": "weight_decay",
    "warmupSteps": "warmup_steps",
    "minLrRatio": "min_lr_ratio",
    "gradClip": "grad_clip",
    "seed": "seed",
    "vqaFraction": "vqa_fraction",
    "evalEverySamples": "eval_every_samples",
    "checkpointEverySteps": "checkpoint_every_steps",
    "logEverySteps": "log_every_steps",
}
EVALUATION = {
    "maxImages": "max_images",
    "captionChoices": "caption_choices",
    "retrievalPools": "retrieval_pools",
    "retrievalRepeats": "retrieval_repeats",
    "generateImages": "generate_images",
    "latencyRepeats": "latency_repeats",
    "curveImages": None,  # read separately: images per learning-curve point
    "curvePoints": None,  # read separately: evaluation points per run
}


def _emit_log(on_event: OnEvent, message: str, level: str = "info") -> None:
    log.log(logging.getLevelName(level.upper()), message)
    on_event({"type": "log", "level": level, "message": message})


def _translate(values: dict[str, Any], table: dict[str, str | None], where: str) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if key not in table:
            raise ValueError(f"{where}: unknown key {key!r}; known keys: {', '.join(table)}")
        if table[key] is not None:
            out[table[key]] = tuple(value) if isinstance(value, list) else value
    return out


@dataclass
class RunSpec:
    """What one training run needs, read from a job spec."""

    family: str
    model_config: dict[str, Any]
    dataset: dict[str, Any]
    train: dict[str, Any]
    evaluation: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_job(
        cls, spec: dict[str, Any], family: str | None = None, seed: int | None = None
    ) -> RunSpec:
        model = spec.get("model") or {}
        budget = spec.get("budget") or {}
        if not budget:
            raise ValueError("budget: give samples or steps")
        train = _translate(spec.get("hyperparameters") or {}, HYPERPARAMETERS, "hyperparameters")
        if "samples" in budget:
            train["budget_samples"] = int(budget["samples"])
        if "steps" in budget:
            train["budget_steps"] = int(budget["steps"])
        if seed is not None:
            train["seed"] = seed
        return cls(
            family=family or model.get("family") or "token-vlm",
            model_config=dict(model.get("config") or {}),
            dataset=dict(spec.get("dataset") or {}),
            train=train,
            evaluation=dict(spec.get("evaluation") or {}),
        )

    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.train)

    def eval_config(self) -> EvalConfig:
        return EvalConfig(**_translate(self.evaluation, EVALUATION, "evaluation"))


# --- data ----------------------------------------------------------------------------------
def open_dataset(dataset: dict[str, Any]) -> Dataset:
    """The whole dataset of a job spec: a built-in by name (with options) or a manifest URI."""
    if "uri" in dataset:
        uri = str(dataset["uri"])
        return load_dataset(uri.removeprefix("file://"))
    if "name" in dataset:
        return load_dataset(dataset["name"], **(dataset.get("options") or {}))
    raise ValueError("dataset: give a built-in name or a manifest uri")


@dataclass
class Splits:
    full: Dataset
    train: Dataset
    val: Dataset
    test: Dataset

    @classmethod
    def of(cls, full: Dataset) -> Splits:
        splits = cls(full, full.split("train"), full.split("val"), full.split("test"))
        if not len(splits.train):
            raise ValueError(f"{full.manifest_path}: the train split is empty")
        if not len(splits.test):
            raise ValueError(f"{full.manifest_path}: the test split is empty")
        if not len(splits.val):
            splits.val = splits.test
        return splits


def visual_inputs(model: VLModel, ds: Dataset, full: Dataset, on_event: OnEvent) -> torch.Tensor:
    """What the model reads for each image of `ds`: cached features of a frozen X-encoder
    (computed once for the whole manifest), or pixels for a trainable one."""
    enc = model.x_encoder
    if not enc.frozen:
        return torch.from_numpy(ds.load_images(enc.image_size))

    def chunk(done: int, total: int) -> None:
        on_event({"type": "log", "level": "info", "message": f"encoding images: {done}/{total}"})

    table = cached_features(enc, full, num_threads=get_settings().num_threads, on_chunk=chunk)
    return table.take(ds)


def _set_threads() -> None:
    threads = get_settings().num_threads
    if threads:
        torch.set_num_threads(threads)


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# --- one training run ------------------------------------------------------------------------
def train_run(
    run: RunSpec,
    workdir: Path,
    *,
    on_event: OnEvent,
    should_stop: Callable[[], bool] = lambda: False,
    splits: Splits | None = None,
) -> dict[str, Any]:
    """Trains one model, evaluates it on the test split and writes `workdir/result.json`."""
    workdir.mkdir(parents=True, exist_ok=True)
    done = workdir / "result.json"
    if done.exists():  # a finished run (a resumed compare job skips it)
        return json.loads(done.read_text())
    _set_threads()
    settings = get_settings()
    device = resolve_device(settings.device, int(os.environ.get("LOCAL_RANK", 0)))
    dist = init_distributed(device) if "WORLD_SIZE" in os.environ else DistContext()
    splits = splits or Splits.of(open_dataset(run.dataset))
    tcfg = run.train_config()
    source = ExampleSource(splits.train, tcfg.vqa_fraction)
    torch.manual_seed(tcfg.seed)
    cfg = make_config(run.family, run.model_config)
    model = build_model(run.family, cfg, source.texts())
    _emit_log(
        on_event,
        f"{run.family}: {model.count_parameters():,} trainable parameters; "
        f"{len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test images",
    )
    started = time.perf_counter()
    model.prepare_texts(source.targets())
    _emit_log(
        on_event,
        f"prepared {len(set(source.targets()))} target texts in {time.perf_counter() - started:.1f} s",
    )
    train_visual = visual_inputs(model, splits.train, splits.full, on_event)
    val_visual = visual_inputs(model, splits.val, splits.full, on_event)
    curve_images = int(run.evaluation.get("curveImages", 100))
    points = int(run.evaluation.get("curvePoints", 5))
    if tcfg.eval_every_samples is None and points > 0:
        tcfg.eval_every_samples = max(1, tcfg.total_samples // points)
    quick = EvalConfig.quick(curve_images)

    def curve_point(m: VLModel) -> dict[str, float]:
        return flat_values(evaluate_model(m, splits.val, val_visual, quick))

    trainer = Trainer(
        model,
        train_visual,
        source,
        tcfg,
        workdir=workdir,
        on_event=on_event,
        should_stop=should_stop,
        evaluate=curve_point,
        dist=dist,
        device=device,
    )
    result = trainer.fit()
    if dist.enabled:
        shutdown_distributed()
    if not dist.is_main:
        return {}
    auxiliary = model.train_auxiliary(source.targets(), tcfg.seed, on_event)
    save_model(model, workdir / MODEL_FILE)
    _write_json(
        workdir / "run.json",
        {
            "family": run.family,
            "dataset": run.dataset,
            "train": run.train,
            "evaluation": run.evaluation,
        },
    )
    _emit_log(
        on_event,
        f"{run.family}: trained {result.samples_seen} samples in {result.train_seconds:.1f} s; evaluating",
    )
    test_visual = visual_inputs(model, splits.test, splits.full, on_event)
    started = time.perf_counter()
    evaluation = evaluate_model(
        model, splits.test, test_visual, run.eval_config(), train_captions=splits.train.captions()
    )
    record = {
        "family": run.family,
        "seed": tcfg.seed,
        "config": model.describe()["config"],
        "trainableParameters": evaluation["trainable_parameters"],
        "totalParameters": evaluation["total_parameters"],
        "samplesSeen": result.samples_seen,
        "steps": result.steps,
        "samplesPerSecond": result.samples_per_second,
        "trainSeconds": result.train_seconds,
        "evalSeconds": time.perf_counter() - started,
        "finalLoss": result.final_loss,
        "auxiliary": auxiliary,
        "latencyMsPerImage": evaluation.get("latency_ms_per_image"),
        "metrics": evaluation["metrics"],
        "curve": result.curve,
        "samples": evaluation["samples"],
        "model": MODEL_FILE,
    }
    on_event(
        {"type": "metrics", "samplesSeen": result.samples_seen, "metrics": flat_values(evaluation)}
    )
    _write_json(done, record)
    (workdir / "checkpoint.pt").unlink(missing_ok=True)
    return record


# --- metrics.json -----------------------------------------------------------------------------
def _summary(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({k for s in seeds for k in s["metrics"]})
    out = {}
    for name in names:
        values = [s["metrics"][name]["value"] for s in seeds if name in s["metrics"]]
        first = next(s["metrics"][name] for s in seeds if name in s["metrics"])
        out[name] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "chance": first["chance"],
            "n": first["n"],
            "seeds": len(values),
        }
    return out


def metrics_document(
    dataset: Dataset, budget: dict[str, Any], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """The versioned `metrics.json`: per family, per seed, final metrics with chance levels and
    the learning curve; plus a summary over seeds."""
    families: dict[str, Any] = {}
    for r in runs:
        fam = families.setdefault(
            r["family"],
            {
                "config": r["config"],
                "trainableParameters": r["trainableParameters"],
                "totalParameters": r["totalParameters"],
                "seeds": [],
            },
        )
        fam["seeds"].append({k: v for k, v in r.items() if k not in ("family", "config")})
    for fam in families.values():
        fam["summary"] = _summary(fam["seeds"])
        fam["samplesPerSecond"] = float(np.mean([s["samplesPerSecond"] for s in fam["seeds"]]))
    return {
        "schema": METRICS_SCHEMA,
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": {
            "name": dataset.info.name,
            "manifest": str(dataset.manifest_path),
            "fingerprint": dataset.fingerprint(),
        },
        "budget": budget,
        "families": families,
    }


# --- jobs -----------------------------------------------------------------------------------
def _train_job(
    spec: dict[str, Any], workdir: Path, on_event: OnEvent, should_stop
) -> dict[str, Any]:
    from vlarena.serving.export import EXPORT_DIR, export_run, exported_files

    run = RunSpec.from_job(spec)
    full = open_dataset(run.dataset)
    splits = Splits.of(full)
    record = train_run(
        run, workdir / "run", on_event=on_event, should_stop=should_stop, splits=splits
    )
    if not record:
        return {}
    doc = metrics_document(full, spec.get("budget") or {}, [record])
    _write_json(workdir / "metrics.json", doc)
    artifacts = ["metrics.json", "run/result.json", f"run/{MODEL_FILE}"]
    if spec.get("export", True):
        # The last step: ONNX graphs and serving.json beside the model, for Triton.
        served = export_run(workdir / "run", dataset=splits, on_event=on_event)
        artifacts += [f"run/{EXPORT_DIR}/{name}" for name in exported_files(served)]
    return {
        "metrics": {k: v["value"] for k, v in record["metrics"].items()},
        "artifacts": artifacts,
        "models": [
            {
                "name": spec.get("modelName") or f"{run.family}-{full.info.name}",
                "family": run.family,
                "path": f"run/{MODEL_FILE}",
                "metrics": {k: v["value"] for k, v in record["metrics"].items()},
            }
        ],
    }


def _compare_job(
    spec: dict[str, Any], workdir: Path, on_event: OnEvent, should_stop
) -> dict[str, Any]:
    families = spec.get("families") or family_names()
    seeds = int(spec.get("seeds", 1))
    if seeds < 1:
        raise ValueError("seeds must be at least 1")
    base_seed = int((spec.get("hyperparameters") or {}).get("seed", 0))
    first = RunSpec.from_job(spec, families[0])
    full = open_dataset(first.dataset)
    splits = Splits.of(full)
    runs = []
    for family in families:
        for k in range(seeds):
            run = RunSpec.from_job(spec, family, base_seed + k)
            _emit_log(on_event, f"compare: {family}, seed {base_seed + k}")

            def tagged(event: Event, family: str = family, seed: int = base_seed + k) -> None:
                on_event({**event, "family": family, "seed": seed})

            runs.append(
                train_run(
                    run,
                    workdir / family / f"seed{base_seed + k}",
                    on_event=tagged,
                    should_stop=should_stop,
                    splits=splits,
                )
            )
    doc = metrics_document(full, spec.get("budget") or {}, [r for r in runs if r])
    _write_json(workdir / "metrics.json", doc)
    summary = {
        f"{fam}/{name}": s["mean"]
        for fam, body in doc["families"].items()
        for name, s in body["summary"].items()
    }
    models = []
    artifacts = ["metrics.json"]
    for fam in families:
        # Each family's first-seed model is registered (and exported for serving).
        first_run = workdir / fam / f"seed{base_seed}"
        models.append(
            {
                "name": f"{fam}-{full.info.name}",
                "family": fam,
                "path": f"{fam}/seed{base_seed}/{MODEL_FILE}",
                "metrics": {
                    k: v["value"]
                    for k, v in json.loads((first_run / "result.json").read_text())[
                        "metrics"
                    ].items()
                },
            }
        )
        if spec.get("export", True):
            from vlarena.serving.export import EXPORT_DIR, export_run, exported_files

            _emit_log(on_event, f"compare: exporting {fam} for serving")
            served = export_run(first_run, dataset=splits, on_event=on_event)
            artifacts += [
                f"{fam}/seed{base_seed}/{EXPORT_DIR}/{name}" for name in exported_files(served)
            ]
    report = spec.get("report", True)
    if report is not False:  # the comparison report (`"report": false` skips it)
        from vlarena.evaluation.report.report import report_config, write_report

        cfg = report_config(report if isinstance(report, dict) else None, spec.get("evaluation"))
        artifacts += write_report(workdir, cfg=cfg, on_event=on_event)
    return {"metrics": summary, "artifacts": artifacts, "models": models}


def _evaluate_job(
    spec: dict[str, Any], workdir: Path, on_event: OnEvent, should_stop
) -> dict[str, Any]:
    source = Path((spec.get("source") or {}).get("runDir", ""))
    record = evaluate_run(
        source, spec.get("dataset") or None, spec.get("evaluation") or {}, on_event
    )
    _write_json(workdir / "evaluation.json", record)
    return {"metrics": flat_values(record), "artifacts": ["evaluation.json"], "models": []}


def find_model(run_dir: Path) -> Path:
    """The model file of a run directory (a train job's workdir, its run/ or a model.pt)."""
    for candidate in (run_dir, run_dir / MODEL_FILE, run_dir / "run" / MODEL_FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no {MODEL_FILE} in {run_dir} (give a training run's output directory)"
    )


def evaluate_run(
    run_dir: Path,
    dataset: dict[str, Any] | None,
    evaluation: dict[str, Any],
    on_event: OnEvent,
) -> dict[str, Any]:
    """Evaluates a saved model on a dataset's test split (default: the one it was trained on)."""
    _set_threads()
    model_path = find_model(run_dir)
    model = load_model(model_path)
    if dataset is None:
        trained = json.loads((model_path.parent / "run.json").read_text())
        dataset = trained["dataset"]
    splits = Splits.of(open_dataset(dataset))
    visual = visual_inputs(model, splits.test, splits.full, on_event)
    cfg = EvalConfig(**_translate(evaluation, EVALUATION, "evaluation"))
    _emit_log(on_event, f"evaluating {model_path} on {len(splits.test)} test images")
    return evaluate_model(model, splits.test, visual, cfg, train_captions=splits.train.captions())


JOB_TYPES = {"train": _train_job, "compare": _compare_job, "evaluate": _evaluate_job}


def execute_job(
    spec: dict[str, Any],
    workdir: Path,
    *,
    on_event: OnEvent,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Runs a job spec (the platform's JSON shape) in `workdir`, resuming what a previous
    attempt left there. Raises StopRequested when `should_stop` asked it to stop."""
    kind = spec.get("type", "train")
    if kind not in JOB_TYPES:
        raise ValueError(f"type: unknown job type {kind!r}; choose one of {', '.join(JOB_TYPES)}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _write_json(workdir / "spec.json", spec)
    return JOB_TYPES[kind](spec, workdir, on_event, should_stop)
