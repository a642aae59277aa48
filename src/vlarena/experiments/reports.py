"""The comparison report of a compare job's directory: loads each family's first-seed model,
measures what the report shows beyond metrics.json (attention, embeddings, zero-shot confusion,
batch-1 latency, selective decoding) and has `evaluation.report` render it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vlarena.evaluation.report import probes as probe
from vlarena.evaluation.report.report import ReportConfig, render_report
from vlarena.evaluation.report.selective import (
    SelectiveConfig,
    TooFewStreamImages,
    selective_decoding,
)
from vlarena.events import OnEvent, ProgressEvent, emit_log, ignore
from vlarena.experiments.configs import report_config
from vlarena.experiments.features import frame_encoder
from vlarena.experiments.inputs import Splits, open_dataset, visual_inputs
from vlarena.experiments.runs import trained_dataset
from vlarena.experiments.runtime import apply_thread_setting, configured_threads
from vlarena.files import read_json
from vlarena.jobs.confinement import Confinement
from vlarena.models.registry import load_model
from vlarena.rundirs import JobDir

__all__ = ["ReportConfig", "SelectiveConfig", "measure_models", "report_config", "write_report"]


def measure_models(
    job: JobDir,
    doc: Mapping[str, Any],
    cfg: ReportConfig,
    on_event: OnEvent,
    confinement: Confinement | None = None,
) -> dict[str, Any]:
    """Loads each family's first-seed model and measures the report's pictures and costs on
    the test split of the data it was trained on (read under a submitted job's
    `confinement`)."""
    apply_thread_setting()
    families = doc["families"]
    first = next(iter(families))
    seed = families[first]["seeds"][0]["seed"]
    trained = trained_dataset(job.seed_run(first, seed))
    splits = Splits.for_training(open_dataset(trained, confinement))
    n = min(cfg.probe_images, len(splits.test))
    test = dataclasses.replace(splits.test, records=splits.test.records[:n])
    out: dict[str, Any] = {"decodeSteps": {}, "zeroshotConfusion": {}}
    loaded = {}
    for done, (family, body) in enumerate(families.items()):
        on_event(ProgressEvent("report", done, len(families) + 1, "models"))
        run = job.seed_run(family, body["seeds"][0]["seed"])
        emit_log(on_event, f"report: measuring {family} ({job.relative(run.model)})")
        model = load_model(run.model).eval()
        visual = visual_inputs(model, splits.test, splits.full, on_event)[:n].to(model.device)
        loaded[family] = (model, visual)
        with torch.no_grad():
            out["decodeSteps"][family] = probe.decode_steps(model, model.generate(visual[:32]))
            out["zeroshotConfusion"][family] = probe.zeroshot_confusion(model, test, visual)
        views = {
            "crossAttention": lambda m=model, v=visual: probe.cross_attention(
                m, test, v, cfg.attention_examples
            ),
            "predictorAttention": lambda m=model, v=visual: probe.predictor_attention(
                m, test, v, cfg.attention_examples
            ),
            "embeddingMap": lambda m=model, v=visual: probe.embedding_map(m, test, v),
        }
        for key, view in views.items():
            if key not in out and (data := view()) is not None:
                out[key] = {"family": family, **data}
        if (
            cfg.selective
            and "selectiveDecoding" not in out
            and hasattr(model, "predict_embedding")
            and hasattr(model, "decode_embeddings")
        ):
            emit_log(
                on_event,
                f"report: selective decoding benchmark on {family} "
                f"({cfg.selective.streams} streams)",
            )
            encode = (
                frame_encoder(model.x_encoder, configured_threads())
                if model.x_encoder.frozen
                else None
            )
            try:
                out["selectiveDecoding"] = {
                    "family": family,
                    **selective_decoding(model, splits.test, cfg.selective, encode),
                }
            except TooFewStreamImages as err:
                emit_log(on_event, f"report: no selective decoding: {err}")
    emit_log(on_event, "report: batch-1 latency, families interleaved")
    out["latency"] = probe.request_latency(loaded, test, cfg.latency_repeats)
    on_event(ProgressEvent("report", len(families) + 1, len(families) + 1, "models"))
    return out


def write_report(
    job: JobDir,
    out: Path | None = None,
    *,
    cfg: ReportConfig | None = None,
    measured: Mapping[str, Any] | None = None,
    on_event: OnEvent = ignore,
    confinement: Confinement | None = None,
) -> list[str]:
    """Writes the report of the compare job in `job` to `out` (default: its report/):
    report.json, figures/*.png and report.html. Returns the written files, relative to the
    job's directory where they lie inside it. A submitted job's data is read under its
    `confinement`."""
    out = Path(out) if out else job.report
    cfg = cfg or ReportConfig()
    doc = read_json(job.metrics)
    probes = measure_models(job, doc, cfg, on_event, confinement) if cfg.probes else {}
    written = render_report(
        doc, out, job_dir=job.path, probes=probes, cfg=cfg, measured=measured, on_event=on_event
    )
    return [_relative(p, job.path) for p in written]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)
