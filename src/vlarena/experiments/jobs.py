"""Runs a job spec end to end in a job directory: train, compare and evaluate jobs, resuming
what an earlier attempt left there. The CLI and the platform's workers both call `run_job`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlarena.data.manifest import Dataset
from vlarena.errors import StopRequested, UserInputError
from vlarena.evaluation.evaluate import flat_values
from vlarena.events import Event, OnEvent, ProgressEvent, RunTag, emit_log, tagged
from vlarena.experiments.configs import RunSpec, eval_config, report_config, train_values
from vlarena.experiments.exports import export_run, exported_files
from vlarena.experiments.inputs import Splits, open_dataset
from vlarena.experiments.reports import write_report
from vlarena.experiments.results import metrics_document, summary_values, sweep_document
from vlarena.experiments.runs import evaluate_run, train_run
from vlarena.files import read_json, write_json
from vlarena.jobs.confinement import Confinement
from vlarena.jobs.spec import (
    AnyJobSpec,
    Budget,
    CompareJobSpec,
    DatasetSpec,
    EvaluateJobSpec,
    TrainJobSpec,
    spec_document,
)
from vlarena.models.registry import family_names
from vlarena.rundirs import JobDir, RunDir

__all__ = ["StopRequested", "run_job", "stopping_at_progress"]

StopCheck = Callable[[], bool]
SOURCE_FIELD = "source.runDir"


def stopping_at_progress(on_event: OnEvent, should_stop: StopCheck) -> OnEvent:
    """`on_event`, raising StopRequested after any phase's progress report once `should_stop`
    asks. Every stage of a job starts with a progress report and every long phase reports as it
    goes, each where it may stop, so a cancel or a deadline ends data loading, feature encoding,
    evaluation, export and the report alike. Training's own reports pass through: its loop polls
    `should_stop` before every step and checkpoints before it stops."""

    def sink(event: Event) -> None:
        on_event(event)
        if isinstance(event, ProgressEvent) and event.phase != "train" and should_stop():
            raise StopRequested(
                f"stopped during {event.phase} ({event.done}/{event.total} {event.unit})"
            )

    return sink


def _budget(budget: Budget) -> dict[str, Any]:
    return budget.model_dump(mode="json", by_alias=True, exclude_none=True)


def _open(dataset: DatasetSpec, on_event: OnEvent, confinement: Confinement | None) -> Dataset:
    """Opens a job's dataset (a built-in is generated on first use: minutes for a large one)."""
    on_event(ProgressEvent("load-data", 0, 1, "datasets"))
    full = open_dataset(dataset, confinement)
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
    spec: TrainJobSpec,
    job: JobDir,
    on_event: OnEvent,
    should_stop: StopCheck,
    force: bool,
    confinement: Confinement | None,
) -> dict[str, Any]:
    run = train_run_spec(spec)
    full = _open(run.dataset, on_event, confinement)
    splits = Splits.for_training(full)
    run_dir = job.single_run
    record = train_run(
        run, run_dir, splits=splits, on_event=on_event, should_stop=should_stop, force=force
    )
    if not record:  # a rank other than 0 of a multi-process run
        return {}
    write_json(job.metrics, metrics_document(full, _budget(spec.budget), [record]))
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


def _compare_budget(
    spec: CompareJobSpec,
    budget: Budget,
    job: JobDir,
    full: Dataset,
    splits: Splits,
    on_event: OnEvent,
    should_stop: StopCheck,
    force: bool,
) -> dict[str, Any]:
    """Every family and seed trained to one budget, into `job`'s seed runs; their metrics.json."""
    families = list(spec.families or family_names())
    base_seed = spec.hyperparameters.seed or 0
    swept = f", {budget.amount} {budget.unit}" if spec.budgets else ""
    runs = []
    for family in families:
        for seed in range(base_seed, base_seed + spec.seeds):
            emit_log(on_event, f"compare: {family}, seed {seed}{swept}")
            run = RunSpec(
                family=family,
                model_config=spec.model.for_family(family) if spec.model else {},
                dataset=spec.dataset,
                # The loop's schedule (warmup, cosine decay) spans this budget, not the sweep's.
                train=train_values(spec.hyperparameters, budget, seed),
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
    return metrics_document(full, _budget(budget), [r for r, _ in done], items)


def _compare_job(
    spec: CompareJobSpec,
    job: JobDir,
    on_event: OnEvent,
    should_stop: StopCheck,
    force: bool,
    confinement: Confinement | None,
) -> dict[str, Any]:
    families = list(spec.families or family_names())
    base_seed = spec.hyperparameters.seed or 0
    full = _open(spec.dataset, on_event, confinement)
    splits = Splits.for_training(full)
    budgets = spec.all_budgets
    docs, artifacts = [], []
    for budget in budgets:
        # The largest budget's runs are the job's own: registered, exported and probed by the
        # report as a one-budget job's are.
        at = job if budget is budgets[-1] else job.at_budget(budget.unit, budget.amount)
        docs.append(_compare_budget(spec, budget, at, full, splits, on_event, should_stop, force))
        if at is not job:
            write_json(at.metrics, docs[-1])
            artifacts.append(job.relative(at.metrics))
    doc = sweep_document(docs) if spec.budgets else docs[0]
    write_json(job.metrics, doc)
    models = []
    artifacts.insert(0, job.relative(job.metrics))
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
        artifacts += write_report(job, cfg=cfg, on_event=on_event, confinement=confinement)
    return {"metrics": summary_values(doc), "artifacts": artifacts, "models": models}


def _source_run(run_dir: str, confinement: Confinement | None) -> RunDir:
    """The run an evaluate job reads: for a submitted job, a directory under the roots whose
    model file lies under them too."""
    if confinement is None:
        return RunDir.resolve(run_dir)
    run = RunDir.resolve(confinement.path(run_dir, SOURCE_FIELD, "dir", must_exist=True))
    confinement.path(run.model, SOURCE_FIELD, "file", must_exist=True)
    return run


def _evaluate_job(
    spec: EvaluateJobSpec,
    job: JobDir,
    on_event: OnEvent,
    confinement: Confinement | None,
) -> dict[str, Any]:
    if spec.source.run_dir is None:
        raise UserInputError(
            "source: give runDir here (the gateway resolves jobId and model to a run directory)"
        )
    record = evaluate_run(
        _source_run(spec.source.run_dir, confinement),
        spec.dataset,
        eval_config(spec.evaluation),
        on_event,
        all_test=spec.all_records_are_test,
        confinement=confinement,
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
    confinement: Confinement | None = None,
) -> dict[str, Any]:
    """Runs a validated job spec in `workdir`, resuming what a previous attempt of the same
    spec left there; returns {"metrics", "artifacts", "models"}. Raises StopRequested when
    `should_stop` asked it to stop (polled before every training step and at every other
    phase's progress reports), NonFiniteLoss when training diverges, and StaleRunError when
    `workdir` holds runs of another spec (`force` retrains them). A job submitted through the
    gateway reads its data and runs under its `confinement` (ConfinementError otherwise); the
    local CLI passes none."""
    on_event = stopping_at_progress(on_event, should_stop)
    job = JobDir(Path(workdir))
    job.path.mkdir(parents=True, exist_ok=True)
    write_json(job.spec, spec_document(spec))
    if isinstance(spec, TrainJobSpec):
        return _train_job(spec, job, on_event, should_stop, force, confinement)
    if isinstance(spec, CompareJobSpec):
        return _compare_job(spec, job, on_event, should_stop, force, confinement)
    return _evaluate_job(spec, job, on_event, confinement)
