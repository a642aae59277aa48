"""Renders the comparison report from the data it is given (a comparison's metrics.json and
what was measured on its models): report.json, figures/*.png and report.html."""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from vlarena.errors import UserInputError
from vlarena.evaluation.report.comparison import build_report, check_metrics
from vlarena.evaluation.report.cost import DEFAULT_NODES, NodeType
from vlarena.evaluation.report.figures import draw_all
from vlarena.evaluation.report.page import PAGE_FILE, REPORT_FILE, write_page
from vlarena.evaluation.report.selective import SelectiveConfig
from vlarena.events import OnEvent, emit_log, ignore
from vlarena.files import write_json

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ReportConfig:
    """What the report measures on the models, beyond what metrics.json holds."""

    probes: bool = True  # load the models: attention, embeddings, confusion, latency
    probe_images: int = 200  # test images for the maps and the confusion matrix
    attention_examples: int = 2
    latency_repeats: int = 5
    selective: SelectiveConfig | None = dataclasses.field(default_factory=SelectiveConfig)
    nodes: tuple[NodeType, ...] = DEFAULT_NODES


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


def render_report(
    doc: Mapping[str, Any],
    out: Path,
    *,
    job_dir: Path,
    probes: Mapping[str, Any],
    cfg: ReportConfig,
    measured: Mapping[str, Any] | None = None,
    on_event: OnEvent = ignore,
) -> list[Path]:
    """Writes the report of a comparison's metrics.json `doc` and its measured `probes` to
    `out`: report.json, figures/*.png and report.html (linking the job's files in `job_dir`).
    Returns the files written."""
    check_metrics(doc)
    report = build_report(
        doc, probes=probes, measured=measured or measured_machine(), nodes=cfg.nodes
    )
    out.mkdir(parents=True, exist_ok=True)
    emit_log(on_event, "report: drawing figures")
    report["figures"] = draw_all(report, out)
    write_json(out / REPORT_FILE, report, indent=1)
    write_page(out, job_dir)
    emit_log(on_event, f"report: {out / PAGE_FILE}")
    return [out / REPORT_FILE, out / PAGE_FILE, *(out / p for p in report["figures"].values())]


def load_nodes(path: Path) -> tuple[NodeType, ...]:
    """Node prices from a JSON file: a list of {name, device, usdPerHour, vcpus, gpus, source}."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list) or not data:
        raise UserInputError(f"{path}: node prices must be a non-empty JSON list")
    return tuple(NodeType.from_dict(d) for d in data)


def verdict_lines(report_dir: Path) -> Iterable[str]:
    """The verdict's sentences, then a budget sweep's crossover per use case."""
    report = json.loads((Path(report_dir) / REPORT_FILE).read_text())
    return report["verdict"]["summary"] + (report.get("sweep") or {}).get("summary", [])
