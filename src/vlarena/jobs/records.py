"""What the store returns: jobs, their attempts, log lines, events and model versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from vlarena.jobs.spec import JobType
from vlarena.jobs.states import JobState


class RecordModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


_M = TypeVar("_M", bound=RecordModel)


def ms_to_datetime(value: str | int | None) -> datetime | None:
    """Epoch milliseconds (as Redis keeps them) as an aware UTC datetime."""
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(float(value)) / 1000, tz=UTC)


def stream_id_time(entry_id: str) -> datetime:
    """The time a Redis stream entry was added: its id is `<ms>-<seq>`."""
    return datetime.fromtimestamp(int(entry_id.split("-", 1)[0]) / 1000, tz=UTC)


class Progress(RecordModel):
    phase: str | None = Field(
        default=None,
        description="The phase running now: load-data, encode-features, prepare-texts, train, "
        "train-decoder, evaluate, export or report.",
    )
    phase_done: int | None = Field(default=None, description="Units of the phase done.")
    phase_total: int | None = Field(default=None, description="Units of the phase in all.")
    run: str | None = Field(default=None, description="The run training now (compare jobs).")
    step: int | None = None
    samples_seen: int | None = None
    total_samples: int | None = None
    percent: float | None = None
    eta_seconds: float | None = None
    samples_per_second: float | None = None
    loss: float | None = None
    attempt: int | None = None
    updated_at: datetime | None = None


class LatestMetrics(RecordModel):
    samples_seen: int | None = None
    values: dict[str, Any] = Field(default_factory=dict)
    final: bool = Field(default=False, description="The job's final metrics, not an interim.")
    updated_at: datetime | None = None


class Checkpoint(RecordModel):
    step: int | None = None
    samples_seen: int | None = None
    path: str | None = None
    attempt: int | None = None


class ClusterState(RecordModel):
    """Where a multi-node job's Kubernetes pods are, as the worker following them last saw."""

    state: str = Field(description="QUEUED, RUNNING, RETRYING, SUCCEEDED or FAILED.")
    reason: str | None = None
    message: str | None = None
    pods: dict[str, int] = Field(default_factory=dict, description="Pods by phase.")
    name: str | None = Field(default=None, description="The Kubernetes Job.")
    namespace: str | None = None
    updated_at: datetime | None = None


class AttemptOutcome(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"


class Attempt(RecordModel):
    number: int
    worker: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: AttemptOutcome
    resumed_from_samples: int = 0
    samples_seen: int | None = None
    error: str | None = None


class JobError(RecordModel):
    code: str
    message: str


class ModelRef(RecordModel):
    name: str
    version: int


class JobRecord(RecordModel):
    """A job as the API shows it."""

    id: str
    revision: int = Field(description="Bumped by every change of the job; its ETag follows it.")
    type: JobType
    state: JobState
    queue: str
    priority: int
    owner: str
    submission_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress | None = None
    metrics: LatestMetrics | None = None
    checkpoint: Checkpoint | None = None
    cluster: ClusterState | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    retries: int = 0
    max_retries: int
    cancel_requested: bool = False
    worker: str | None = None
    workdir: str | None = None
    error: JobError | None = None
    result: dict[str, Any] | None = None
    models: list[ModelRef] = Field(default_factory=list)

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> JobRecord:
        """Parses the `job:{id}` hash (see `vlarena.jobs.keys`) in one validation pass.

        Times stay epoch milliseconds until pydantic reads them as UTC datetimes.
        """
        attempts = []
        models = []
        for name, value in fields.items():
            if name.startswith("attempt:"):
                attempts.append(json.loads(value))
            elif name.startswith("model:"):
                models.append({"name": name.removeprefix("model:"), "version": value})
        attempts.sort(key=lambda a: a["number"])
        models.sort(key=lambda m: m["name"])
        spec = json.loads(fields["spec"])
        data: dict[str, Any] = {
            "id": fields["id"],
            "revision": fields.get("revision", 0),
            "type": fields["type"],
            "state": fields["state"],
            "queue": fields["queue"],
            "priority": fields["priority"],
            "owner": fields.get("owner", ""),
            "submissionId": fields.get("submissionId") or None,
            "metadata": spec.get("metadata", {}),
            "spec": spec,
            "createdAt": fields["createdAt"],
            "updatedAt": fields["updatedAt"],
            "startedAt": fields.get("startedAt"),
            "finishedAt": fields.get("finishedAt"),
            "attempts": attempts,
            "retries": fields.get("retries", 0),
            "maxRetries": fields["maxRetries"],
            "cancelRequested": fields.get("cancelRequested") == "1",
            "worker": fields.get("worker"),
            "workdir": fields.get("workdir"),
            "models": models,
        }
        for name in ("progress", "metrics", "checkpoint", "cluster", "error", "result"):
            if fields.get(name):
                data[name] = json.loads(fields[name])
        return cls.model_validate(data)


class LogEntry(RecordModel):
    """One line of a job's log."""

    id: str = Field(description="Stream id; pass it as `after` (or Last-Event-ID) to resume.")
    time: datetime
    level: str
    message: str
    attempt: int
    source: str = Field(description="`job` (the training code) or `platform` (lifecycle).")


class JobEvent(RecordModel):
    """One lifecycle event of a job (Created, Started, Retrying, Succeeded, ...)."""

    id: str
    time: datetime
    level: str
    reason: str
    message: str
    attempt: int


class VersionStatus(StrEnum):
    """PENDING: being prepared (e.g. exported for serving); READY: usable; FAILED: unusable."""

    PENDING = "PENDING"
    READY = "READY"
    FAILED = "FAILED"


class ModelVersion(RecordModel):
    name: str
    version: int
    family: str
    status: VersionStatus
    status_message: str | None = None
    source_job: str
    path: str = Field(description="Absolute directory of the saved model in the artifact store.")
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    aliases: list[str] = Field(default_factory=list)

    @classmethod
    def from_json(cls, raw: str, aliases: list[str]) -> ModelVersion:
        data = json.loads(raw)
        data["createdAt"] = ms_to_datetime(data["createdAt"])
        return cls.model_validate({**data, "aliases": aliases})


class RegisteredModel(RecordModel):
    name: str
    family: str
    latest_version: int
    created_at: datetime
    updated_at: datetime
    aliases: dict[str, int] = Field(
        default_factory=dict, description="Alias → version, e.g. production → 3."
    )
    owner: str | None = Field(
        default=None,
        description="Who may register versions and set aliases besides admins: `key:NAME` or "
        "`team:NAME`; null for a model registered before owners were recorded (admins only).",
    )
