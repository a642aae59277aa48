"""Writes the comparison report of a compare job's directory: report.json, figures/*.png and
report.html, measuring what it needs on the trained models (attention, embeddings, zero-shot
confusion, batch-1 latency, selective decoding)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from vlarena.evaluation.report import probes as probe
from vlarena.evaluation.report.comparison import build_report, check_metrics
from vlarena.evaluation.report.cost import DEFAULT_NODES, NodeType
from vlarena.evaluation.report.figures import draw_all
from vlarena.evaluation.report.page import PAGE_FILE, REPORT_FILE, write_page
from vlarena.evaluation.report.selective import SelectiveConfig, selective_decoding

log = logging.getLogger(__name__)
OnEvent = Callable[[dict[str, Any]], None]
REPORT_DIR = "report"
MODEL_FILE = "model.pt"


@dataclasses.dataclass
class ReportConfig:
    """What the report measures on the models, beyond what metrics.json holds."""

    probes: bool = True  # load the models: attention, embeddings, confusion, latency
    probe_images: int = 200  # test images for the maps and the confusion matrix
    attention_examples: int = 2
    latency_repeats: int = 5
    selective: SelectiveConfig | None = dataclasses.field(
        default_factory=lambda: SelectiveConfig(streams=32)
    )
    nodes: tuple[NodeType, ...] = DEFAULT_NODES


REPORT_OPTIONS = ("probes", "probeImages", "selectiveStreams", "nodes")


def report_config(
    options: Mapping[str, Any] | None, evaluation: Mapping[str, Any] | None = None
) -> ReportConfig:
    """A ReportConfig from a compare job's `report` options (camelCase, all optional):
    probes (bool), probeImages, selectiveStreams (0: no benchmark), nodes (node prices).

    Without options, a job that evaluates on few images (`evaluation.maxImages`, a smoke
    test) gets a report sized alike: as many probe images, a stream per 32 of them.
    """
    options = dict(options or {})
    unknown = set(options) - set(REPORT_OPTIONS)
    if unknown:
        raise ValueError(
            f"report: unknown keys {sorted(unknown)}; known keys: {', '.join(REPORT_OPTIONS)}"
        )
    cfg = ReportConfig()
    max_images = (evaluation or {}).get("maxImages")
    if max_images:
        cfg.probe_images = min(cfg.probe_images, int(max_images))
        if cfg.selective:
            cfg.selective.streams = max(1, min(cfg.selective.streams, int(max_images) // 32))
    if "probes" in options:
        cfg.probes = bool(options["probes"])
    if "probeImages" in options:
        cfg.probe_images = int(options["probeImages"])
    if "selectiveStreams" in options:
        streams = int(options["selectiveStreams"])
        cfg.selective = SelectiveConfig(streams=streams) if streams > 0 else None
    if "nodes" in options:
        cfg.nodes = tuple(NodeType.from_dict(n) for n in options["nodes"])
    return cfg


def measured_machine() -> dict[str, Any]:
    """The machine measuring now: device kind, torch threads, CPU or GPU name."""
    cuda = torch.cuda.is_available()
    return {
        "device": "cuda" if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "name": torch.cuda.get_device_name(0)
        if cuda
        else platform.processor() or platform.machine(),
    }


def _log(on_event: OnEvent, message: str) -> None:
    log.info(message)
    on_event({"type": "log", "level": "info", "message": message})


def run_model_path(workdir: Path, family: str, seed: int) -> Path:
    return workdir / family / f"seed{seed}" / MODEL_FILE


def measure_models(
    workdir: Path, doc: Mapping[str, Any], cfg: ReportConfig, on_event: OnEvent
) -> dict[str, Any]:
    """Loads each family's first-seed model and measures the report's pictures and costs on
    the test split of the data it was trained on."""
    from vlarena.models.registry import load_model
    from vlarena.training.jobs import Splits, _set_threads, open_dataset, visual_inputs

    _set_threads()
    families = doc["families"]
    first = next(iter(families))
    seed = families[first]["seeds"][0]["seed"]
    run = json.loads((run_model_path(workdir, first, seed).parent / "run.json").read_text())
    splits = Splits.of(open_dataset(run["dataset"]))
    n = min(cfg.probe_images, len(splits.test))
    test = dataclasses.replace(splits.test, records=splits.test.records[:n])
    out: dict[str, Any] = {"decodeSteps": {}, "zeroshotConfusion": {}}
    loaded = {}
    for family, body in families.items():
        path = run_model_path(workdir, family, body["seeds"][0]["seed"])
        _log(on_event, f"report: measuring {family} ({path.relative_to(workdir)})")
        model = load_model(path).eval()
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
            _log(
                on_event,
                f"report: selective decoding benchmark on {family} ({cfg.selective.streams} streams)",
            )
            out["selectiveDecoding"] = {
                "family": family,
                **selective_decoding(model, cfg.selective),
            }
    _log(on_event, "report: batch-1 latency, families interleaved")
    out["latency"] = probe.request_latency(loaded, test, cfg.latency_repeats)
    return out


def write_report(
    workdir: Path,
    out: Path | None = None,
    *,
    cfg: ReportConfig | None = None,
    measured: Mapping[str, Any] | None = None,
    on_event: OnEvent = lambda _e: None,
) -> list[str]:
    """Writes the report of the compare job in `workdir` to `out` (default workdir/report/):
    report.json, figures/*.png and report.html. Returns the written files, relative to
    `workdir` where they lie inside it."""
    workdir = Path(workdir)
    out = Path(out) if out else workdir / REPORT_DIR
    cfg = cfg or ReportConfig()
    doc = json.loads((workdir / "metrics.json").read_text())
    check_metrics(doc)
    probes = measure_models(workdir, doc, cfg, on_event) if cfg.probes else {}
    report = build_report(
        doc, probes=probes, measured=measured or measured_machine(), nodes=cfg.nodes
    )
    out.mkdir(parents=True, exist_ok=True)
    _log(on_event, "report: drawing figures")
    report["figures"] = draw_all(report, out)
    tmp = out / f"{REPORT_FILE}.tmp"
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, out / REPORT_FILE)
    write_page(out, workdir)
    written = [out / REPORT_FILE, out / PAGE_FILE, *(out / p for p in report["figures"].values())]
    _log(on_event, f"report: {out / PAGE_FILE}")
    return [_relative(p, workdir) for p in written]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def load_nodes(path: Path) -> tuple[NodeType, ...]:
    """Node prices from a JSON file: a list of {name, device, usdPerHour, vcpus, gpus, source}."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: node prices must be a non-empty JSON list")
    return tuple(NodeType.from_dict(d) for d in data)


def verdict_lines(report_dir: Path) -> Iterable[str]:
    report = json.loads((Path(report_dir) / REPORT_FILE).read_text())
    return report["verdict"]["summary"]
