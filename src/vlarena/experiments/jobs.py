"""Runs a job spec end to end in a job directory: train, compare and evaluate jobs, resuming
what an earlier attempt left there. The CLI and the platform's workers both call `run_job`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlarena.data.manifest import Dataset
from vlarena.errors import UserInputError
from vlarena.evaluation.evaluate import flat_values
from vlarena.events import OnEvent, ProgressEvent, RunTag, emit_log, tagged
from vlarena.experiments.configs import RunSpec, eval_config, report_config, train_values
from vlarena.experiments.exports import export_run, exported_files
from vlarena.experiments.inputs import Splits, open_dataset
from vlarena.experiments.reports import write_report
from vlarena.experiments.results import metrics_document, summary_values
from vlarena.experiments.runs import evaluate_run, train_run
from vlarena.files import read_json, write_json
from vlarena.jobs.spec import (
    AnyJobSpec,
    CompareJobSpec,
    DatasetSpec,
    EvaluateJobSpec,
    TrainJobSpec,
    spec_document,
)
from vlarena.models.registry import family_names
from vlarena.rundirs import JobDir, RunDir
from vlarena.training.loop import StopRequested

__all__ = ["StopRequested", "run_job"]

StopCheck = Callable[[], bool]


def _budget(spec: TrainJobSpec | CompareJobSpec) -> dict[str, Any]:
    return spec.budget.model_dump(mode="json", by_alias=True, exclude_none=True)


def _open(dataset: DatasetSpec, on_event: OnEvent) -> Dataset:
    """Opens a job's dataset (a built-in is generated on first use: minutes for a large one)."""
    on_event(ProgressEvent("load-data", 0, 1, "datasets"))
    full = open_dataset(dataset)
    on_event(ProgressEvent("load-data", 1, 1, "datasets"))
    return full


def _export(run: RunDir, job: JobDir, splits: Splits, on_event: OnEvent) -> list[str]:
    served = export_run(run, splits=splits, on_event=on_event)
    return [job.relative(run.export / name) for name in exported_files(served)]


def train_run_spec(spec: TrainJobSpec) -> RunSpec:
    """The one run of a train job."""
    return RunSpec(
        family=spec.model.family,
        model_config=dict(spec.model.config),
        dataset=spec.dataset,
        train=train_values(spec.hyperparameters, spec.budget),
        evaluation=spec.evaluation,
    )


def _train_job(
    spec: TrainJobSpec, job: JobDir, on_event: OnEvent, should_stop: StopCheck, force: bool
) -> dict[str, Any]:
    run = train_run_spec(spec)
    full = _open(run.dataset, on_event)
    splits = Splits.for_training(full)
    run_dir = job.single_run
    record = train_run(
        run, run_dir, splits=splits, on_event=on_event, should_stop=should_stop, force=force
    )
    if not record:  # a rank other than 0 of a multi-process run
        return {}
    write_json(job.metrics, metrics_document(full, _budget(spec), [record]))
    artifacts = [job.relative(p) for p in (job.metrics, run_dir.result, run_dir.model)]
    if spec.export:
        # The last step: ONNX graphs and serving.json beside the model, for Triton.
        artifacts += _export(run_dir, job, splits, on_event)
    values = {k: v["value"] for k, v in record["metrics"].items()}
    return {
        "metrics": values,
        "artifacts": artifacts,
        "models": [
            {
                "name": spec.model_name or f"{run.family}-{full.info.name}",
                "family": run.family,
                "path": job.relative(run_dir.model),
                "metrics": values,
            }
        ],
    }


def _compare_job(
    spec: CompareJobSpec, job: JobDir, on_event: OnEvent, should_stop: StopCheck, force: bool
) -> dict[str, Any]:
    families = list(spec.families or family_names())
    base_seed = spec.hyperparameters.seed or 0
    full = _open(spec.dataset, on_event)
    splits = Splits.for_training(full)
    runs = []
    for family in families:
        for seed in range(base_seed, base_seed + spec.seeds):
            emit_log(on_event, f"compare: {family}, seed {seed}")
            run = RunSpec(
                family=family,
                model_config=spec.model.for_family(family) if spec.model else {},
                dataset=spec.dataset,
                train=train_values(spec.hyperparameters, spec.budget, seed),
                evaluation=spec.evaluation,
            )
            record = train_run(
                run,
                job.seed_run(family, seed),
                splits=splits,
                on_event=tagged(on_event, RunTag(family, seed)),
                should_stop=should_stop,
                force=force,
            )
            runs.append(record)
    done = [(r, job.seed_run(r["family"], r["seed"])) for r in runs if r]
    items = [read_json(d.items) if d.items.exists() else None for _, d in done]
    doc = metrics_document(full, _budget(spec), [r for r, _ in done], items)
    write_json(job.metrics, doc)
    models = []
    artifacts = [job.relative(job.metrics)]
    for family in families:
        # Each family's first-seed model is registered (and exported for serving).
        first_run = job.seed_run(family, base_seed)
        models.append(
            {
                "name": f"{family}-{full.info.name}",
                "family": family,
                "path": job.relative(first_run.model),
                "metrics": {
                    k: v["value"] for k, v in read_json(first_run.result)["metrics"].items()
                },
            }
        )
        if spec.export:
            emit_log(on_event, f"compare: exporting {family} for serving")
            artifacts += _export(first_run, job, splits, on_event)
    if spec.report is not False:  # the comparison report (`"report": false` skips it)
        options = spec.report if not isinstance(spec.report, bool) else None
        cfg = report_config(options, spec.evaluation)
        artifacts += write_report(job, cfg=cfg, on_event=on_event)
    return {"metrics": summary_values(doc), "artifacts": artifacts, "models": models}


def _evaluate_job(
    spec: EvaluateJobSpec, job: JobDir, on_event: OnEvent, should_stop: StopCheck
) -> dict[str, Any]:
    if spec.source.run_dir is None:
        raise UserInputError(
            "source: give runDir here (the gateway resolves jobId and model to a run directory)"
        )
    record = evaluate_run(
        RunDir.resolve(spec.source.run_dir),
        spec.dataset,
        eval_config(spec.evaluation),
        on_event,
        all_test=spec.all_records_are_test,
    )
    write_json(job.evaluation, record)
    return {
        "metrics": flat_values(record),
        "artifacts": [job.relative(job.evaluation)],
        "models": [],
    }


def run_job(
    spec: AnyJobSpec,
    workdir: Path,
    *,
    on_event: OnEvent,
    should_stop: StopCheck = lambda: False,
    force: bool = False,
) -> dict[str, Any]:
    """Runs a validated job spec in `workdir`, resuming what a previous attempt of the same
    spec left there; returns {"metrics", "artifacts", "models"}. Raises StopRequested when
    `should_stop` asked it to stop, and StaleRunError when `workdir` holds runs of another
    spec (`force` retrains them)."""
    job = JobDir(Path(workdir))
    job.path.mkdir(parents=True, exist_ok=True)
    write_json(job.spec, spec_document(spec))
    if isinstance(spec, TrainJobSpec):
        return _train_job(spec, job, on_event, should_stop, force)
    if isinstance(spec, CompareJobSpec):
        return _compare_job(spec, job, on_event, should_stop, force)
    return _evaluate_job(spec, job, on_event, should_stop)
