"""Request and response bodies of the API beyond the stored records, with OpenAPI examples."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import Field

from vlarena.jobs.records import (
    JobEvent,
    JobRecord,
    LogEntry,
    ModelVersion,
    RecordModel,
    RegisteredModel,
)
from vlarena.jobs.spec import NAME_PATTERN


class JobList(RecordModel):
    items: list[JobRecord]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page."
    )


class SpecValidation(RecordModel):
    """The answer to `validateOnly`: the spec as it would be stored, and where it would run."""

    valid: bool = True
    queue: str
    spec: dict[str, Any]


class CancelResult(RecordModel):
    id: str
    state: str = Field(description="CANCELLED at once for waiting jobs, else CANCELLING.")


class LogPage(RecordModel):
    items: list[LogEntry]
    next_after: str | None = Field(
        default=None, description="Pass as `after` to read on; null when nothing more is kept."
    )


class EventPage(RecordModel):
    items: list[JobEvent]
    next_after: str | None = None


class Artifact(RecordModel):
    path: str = Field(description="Relative to the job's run directory.")
    size_bytes: int
    modified_at: datetime
    url: str


class ArtifactList(RecordModel):
    root: str = Field(description="The run directory in the artifact store.")
    declared: list[str] = Field(
        default_factory=list, description="Artifacts the job reported when it succeeded."
    )
    items: list[Artifact]


class ModelList(RecordModel):
    items: list[RegisteredModel]
    next_cursor: str | None = None


class VersionList(RecordModel):
    items: list[ModelVersion]


class AliasRequest(RecordModel):
    alias: str = Field(pattern=NAME_PATTERN, examples=["production"])
    version: int = Field(ge=1, examples=[3])


class Health(RecordModel):
    status: str = "ok"


class Readiness(RecordModel):
    status: str = Field(examples=["ready"])
    checks: dict[str, str] = Field(examples=[{"redis": "ok"}])


TRAIN_EXAMPLE: dict[str, Any] = {
    "type": "train",
    "model": {"family": "vl-jepa", "config": {"preset": "small"}},
    "dataset": {"name": "fashion-grid", "options": {"n_train": 8000}},
    "hyperparameters": {"learningRate": 0.001, "batchSize": 128, "weightDecay": 0.01},
    "budget": {"samples": 20000},
    "resources": {"cpu": 2, "memory": "8Gi"},
    "priority": 10,
    "maxRetries": 3,
    "activeDeadlineSeconds": 3600,
    "submissionId": "nightly-2025-06-01-vl-jepa",
    "metadata": {"team": "vision"},
}
COMPARE_EXAMPLE: dict[str, Any] = {
    "type": "compare",
    "families": ["token-vlm", "vl-jepa"],
    "dataset": {"name": "fashion-grid"},
    "budget": {"samples": 20000},
    "seeds": 3,
}
SWEEP_EXAMPLE: dict[str, Any] = {
    "type": "compare",
    "dataset": {"name": "fashion-grid"},
    "budgets": [{"samples": 5000}, {"samples": 20000}, {"samples": 80000}],
    "seeds": 3,
}
EVALUATE_EXAMPLE: dict[str, Any] = {
    "type": "evaluate",
    "source": {"model": "fashion-vl-jepa", "alias": "production"},
    "dataset": {"name": "fashion-grid", "options": {"n_test": 1000}},
}
VALIDATE_ONLY_EXAMPLE: dict[str, Any] = {**TRAIN_EXAMPLE, "validateOnly": True}

SPEC_EXAMPLES: dict[str, dict[str, Any]] = {
    "train": {"summary": "Train a VL-JEPA model", "value": TRAIN_EXAMPLE},
    "compare": {"summary": "Compare both families at an equal budget", "value": COMPARE_EXAMPLE},
    "budgetSweep": {
        "summary": "Compare both families at several budgets: where does one overtake the other?",
        "value": SWEEP_EXAMPLE,
    },
    "evaluate": {"summary": "Evaluate the production model", "value": EVALUATE_EXAMPLE},
    "validateOnly": {"summary": "Check a spec, create nothing", "value": VALIDATE_ONLY_EXAMPLE},
}

JOB_EXAMPLE: dict[str, Any] = {
    "id": "job-1935a2f8c1a3f9e2b",
    "revision": 42,
    "type": "train",
    "state": "RUNNING",
    "queue": "cpu",
    "priority": 10,
    "owner": "ci",
    "submissionId": "nightly-2025-06-01-vl-jepa",
    "metadata": {"team": "vision"},
    "spec": TRAIN_EXAMPLE,
    "createdAt": "2025-06-01T02:00:00.120Z",
    "updatedAt": "2025-06-01T02:01:10.480Z",
    "startedAt": "2025-06-01T02:00:01.030Z",
    "finishedAt": None,
    "progress": {
        "step": 160,
        "samplesSeen": 10240,
        "totalSamples": 20000,
        "percent": 51.2,
        "etaSeconds": 15.3,
        "samplesPerSecond": 640.0,
        "loss": 1.62,
        "attempt": 2,
        "updatedAt": "2025-06-01T02:01:10.480Z",
    },
    "metrics": {
        "samplesSeen": 8192,
        "values": {"val/caption_of_10": 0.71, "val/loss": 1.7},
        "final": False,
        "updatedAt": "2025-06-01T02:01:05.000Z",
    },
    "checkpoint": {"step": 128, "samplesSeen": 8192, "path": "checkpoints/last.pt", "attempt": 2},
    "attempts": [
        {
            "number": 1,
            "worker": "worker-a:4121",
            "startedAt": "2025-06-01T02:00:01.030Z",
            "finishedAt": "2025-06-01T02:00:40.200Z",
            "outcome": "lost",
            "resumedFromSamples": 0,
            "samplesSeen": 4480,
            "error": "worker worker-a:4121 stopped renewing the lease of attempt 1",
        },
        {
            "number": 2,
            "worker": "worker-b:4177",
            "startedAt": "2025-06-01T02:00:41.010Z",
            "finishedAt": None,
            "outcome": "running",
            "resumedFromSamples": 4096,
            "samplesSeen": None,
            "error": None,
        },
    ],
    "retries": 1,
    "maxRetries": 3,
    "cancelRequested": False,
    "worker": "worker-b:4177",
    "workdir": "/var/lib/vlarena/jobs/job-1935a2f8c1a3f9e2b/attempt-2",
    "error": None,
    "result": None,
    "models": [],
}
LOG_EXAMPLE: dict[str, Any] = {
    "id": "1748743270480-0",
    "time": "2025-06-01T02:01:10.480Z",
    "level": "info",
    "message": "step 160 · 10,240/20,000 samples (51.2%) · loss 1.620 · 640 samples/s · ETA 15 s",
    "attempt": 2,
    "source": "platform",
}
EVENT_EXAMPLE: dict[str, Any] = {
    "id": "1748743241010-0",
    "time": "2025-06-01T02:00:41.010Z",
    "level": "info",
    "reason": "Started",
    "message": (
        "attempt 2 started on worker worker-b:4177, resuming from the checkpoint at 4096 samples"
    ),
    "attempt": 2,
}
VERSION_EXAMPLE: dict[str, Any] = {
    "name": "fashion-vl-jepa",
    "version": 3,
    "family": "vl-jepa",
    "status": "READY",
    "statusMessage": None,
    "sourceJob": "job-1935a2f8c1a3f9e2b",
    "path": "/var/lib/vlarena/jobs/job-1935a2f8c1a3f9e2b/attempt-2/model",
    "metrics": {"test/caption_of_10": 0.858},
    "createdAt": "2025-06-01T02:02:00.000Z",
    "aliases": ["production"],
}
MODEL_EXAMPLE: dict[str, Any] = {
    "name": "fashion-vl-jepa",
    "family": "vl-jepa",
    "latestVersion": 3,
    "createdAt": "2025-05-20T10:00:00.000Z",
    "updatedAt": "2025-06-01T02:05:00.000Z",
    "aliases": {"production": 3, "candidate": 3},
}


def example_response(example: Any, description: str = "OK") -> dict[str, Any]:
    """An OpenAPI response entry carrying one JSON example."""
    return {"description": description, "content": {"application/json": {"example": example}}}


def sse_example(event: str, example: dict[str, Any]) -> str:
    """One server-sent event as it appears on the wire."""
    return f"event: {event}\nid: {example['id']}\ndata: {json.dumps(example)}\n\n"
