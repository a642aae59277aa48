"""What a running job reports, as types: log lines, progress of a phase, metrics, artifacts.

The ML core emits these; each consumer renders them once: the CLI's progress bar, the worker's
Redis stream and job record, and JSON logs (`as_dict` is the one wire shape, also printed by
`vlarena run-job --events` and read back by the multi-node launcher with `event_from_dict`).
Every long phase reports progress, so a slow job can be told from a stuck one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Level = Literal["debug", "info", "warning", "error"]
# The phases of a job, in the order they run.
Phase = Literal[
    "load-data",
    "encode-features",
    "prepare-texts",
    "train",
    "train-decoder",
    "evaluate",
    "export",
    "report",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunTag:
    """Which run of a job an event belongs to (a compare job trains one per family and seed)."""

    family: str
    seed: int

    def label(self) -> str:
        return f"{self.family} seed {self.seed}"


@dataclass(frozen=True)
class LogEvent:
    message: str
    level: Level = "info"
    run: RunTag | None = None


@dataclass(frozen=True)
class ProgressEvent:
    """`done` of `total` units of one phase; training adds its step, loss and rate."""

    phase: Phase
    done: int
    total: int
    unit: str = "items"
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    per_second: float | None = None
    eta_seconds: float | None = None
    learning_rate: float | None = None
    run: RunTag | None = None

    @property
    def percent(self) -> float:
        return round(100.0 * self.done / self.total, 2) if self.total else 100.0


@dataclass(frozen=True)
class MetricEvent:
    """Metrics measured after `samples_seen` training samples (a learning-curve point)."""

    samples_seen: int
    metrics: Mapping[str, Any] = field(default_factory=dict)
    run: RunTag | None = None


@dataclass(frozen=True)
class ArtifactEvent:
    """A file written that a later attempt or a user relies on (a checkpoint, a model)."""

    kind: Literal["checkpoint", "model", "export", "report"]
    path: str
    step: int | None = None
    samples_seen: int | None = None
    run: RunTag | None = None


Event = LogEvent | ProgressEvent | MetricEvent | ArtifactEvent
OnEvent = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """An event sink that drops everything."""


def tagged(on_event: OnEvent, run: RunTag) -> OnEvent:
    """A sink that marks every event with the run it belongs to."""

    def sink(event: Event) -> None:
        on_event(dataclasses.replace(event, run=run))

    return sink


def emit_log(on_event: OnEvent, message: str, level: Level = "info") -> None:
    """Logs `message` through `logging` and reports it as a job log line."""
    log.log(logging.getLevelName(level.upper()), message)
    on_event(LogEvent(message, level))


def _run_fields(run: RunTag | None) -> dict[str, Any]:
    return {"family": run.family, "seed": run.seed} if run else {}


def as_dict(event: Event) -> dict[str, Any]:
    """The event's wire shape: camelCase JSON with a `type`."""
    if isinstance(event, LogEvent):
        body: dict[str, Any] = {"type": "log", "level": event.level, "message": event.message}
    elif isinstance(event, ProgressEvent):
        body = {
            "type": "progress",
            "phase": event.phase,
            "done": event.done,
            "total": event.total,
            "unit": event.unit,
            "percent": event.percent,
        }
        if event.phase == "train":
            body |= {
                "step": event.step,
                "totalSteps": event.total_steps,
                "samplesSeen": event.done,
                "totalSamples": event.total,
                "loss": event.loss,
                "samplesPerSecond": event.per_second,
                "etaSeconds": event.eta_seconds,
                "learningRate": event.learning_rate,
            }
        elif event.per_second is not None:
            body["perSecond"] = event.per_second
    elif isinstance(event, MetricEvent):
        body = {"type": "metrics", "samplesSeen": event.samples_seen, "metrics": event.metrics}
    else:
        body = {"type": "artifact", "kind": event.kind, "path": event.path}
        if event.step is not None:
            body["step"] = event.step
        if event.samples_seen is not None:
            body["samplesSeen"] = event.samples_seen
    return body | _run_fields(event.run)


def event_from_dict(data: Mapping[str, Any]) -> Event | None:
    """An event read back from its wire shape; None for a shape that is not one."""
    run = RunTag(str(data["family"]), int(data["seed"])) if "family" in data else None
    kind = data.get("type")
    if kind == "log":
        return LogEvent(str(data.get("message", "")), data.get("level", "info"), run)
    if kind == "progress":
        return ProgressEvent(
            phase=data.get("phase", "train"),
            done=int(data.get("done", data.get("samplesSeen", 0)) or 0),
            total=int(data.get("total", data.get("totalSamples", 0)) or 0),
            unit=str(data.get("unit", "samples")),
            step=data.get("step"),
            total_steps=data.get("totalSteps"),
            loss=data.get("loss"),
            per_second=data.get("samplesPerSecond", data.get("perSecond")),
            eta_seconds=data.get("etaSeconds"),
            learning_rate=data.get("learningRate"),
            run=run,
        )
    if kind == "metrics":
        return MetricEvent(int(data.get("samplesSeen") or 0), dict(data.get("metrics") or {}), run)
    if kind == "artifact":
        return ArtifactEvent(
            kind=data.get("kind", "checkpoint"),
            path=str(data.get("path", "")),
            step=data.get("step"),
            samples_seen=data.get("samplesSeen"),
            run=run,
        )
    return None


def describe(event: Event) -> str:
    """One line of text for a log: what the event says, prefixed with its run."""
    prefix = f"[{event.run.label()}] " if event.run else ""
    if isinstance(event, LogEvent):
        return prefix + event.message
    if isinstance(event, ProgressEvent):
        text = f"{event.phase}: {event.done:,}/{event.total:,} {event.unit} ({event.percent:.1f}%)"
        if event.loss is not None:
            text += f", loss {event.loss:.3f}"
        return prefix + text
    if isinstance(event, MetricEvent):
        shown = {k: round(v, 4) for k, v in event.metrics.items() if isinstance(v, float)}
        return f"{prefix}metrics at {event.samples_seen} samples: {shown}"
    return f"{prefix}{event.kind} at {event.samples_seen} samples: {event.path}"
