"""/v1/jobs: submit, list, inspect, follow, cancel jobs and fetch their artifacts."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import AfterValidator
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sse_starlette.sse import EventSourceResponse

from vlarena.gateway.auth import Scope
from vlarena.gateway.deps import (
    READ_SECURITY,
    ConfinementDep,
    DispatcherDep,
    KeyFirstRoute,
    LimitsDep,
    ReadAccess,
    RegistryDep,
    StoreDep,
    StreamsDep,
    SubmitAccess,
    admit,
    check_model_names,
)
from vlarena.gateway.documents import JobDocuments
from vlarena.gateway.errors import REDIS_RETRY_AFTER_SECONDS, ApiError, error_responses
from vlarena.gateway.metrics import JOBS_SUBMITTED
from vlarena.gateway.schemas import (
    EVENT_EXAMPLE,
    JOB_EXAMPLE,
    LOG_EXAMPLE,
    SPEC_EXAMPLES,
    Artifact,
    ArtifactList,
    CancelResult,
    EventPage,
    JobList,
    LogPage,
    SpecValidation,
    example_response,
    sse_example,
)
from vlarena.jobs.confinement import spec_problems
from vlarena.jobs.records import JobRecord
from vlarena.jobs.registry import ModelRegistry
from vlarena.jobs.spec import (
    EvaluateJobSpec,
    JobSpec,
    JobType,
    queue_for,
    spec_document,
)
from vlarena.jobs.states import JobState
from vlarena.jobs.store import JobStore, SubmissionConflict
from vlarena.jobs.streams import StreamKind, checked_entry_id
from vlarena.rundirs import JobDir

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=KeyFirstRoute)

JobId = Annotated[
    str,
    PathParam(pattern=r"^job-[0-9a-f]{11,}$", examples=["job-1935a2f8c1a3f9e2b"]),
]
StreamId = Annotated[
    str | None,
    Query(
        pattern=r"^\d+-\d+$",
        description="Entry id to read after (exclusive); default: from the start.",
        examples=["1748743241010-0"],
    ),
    AfterValidator(checked_entry_id),
]
LastEventId = Annotated[str | None, Header(pattern=r"^\d+-\d+$"), AfterValidator(checked_entry_id)]
MAX_ARTIFACTS_LISTED = 10_000
# Seconds a follower turned away waits before trying again.
FOLLOWER_RETRY_AFTER_SECONDS = 5


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True)


def _invalid(field: str, message: str) -> ApiError:
    details = [{"field": field, "message": message, "type": "invalid_reference"}]
    return ApiError(422, "validation_error", f"{field}: {message}", details)


def _confined(problems: list[tuple[str, str]]) -> ApiError:
    details = [{"field": f, "message": m, "type": "confinement"} for f, m in problems]
    return ApiError(422, "validation_error", "; ".join(f"{f}: {m}" for f, m in problems), details)


def _unknown_outcome(submission_id: str, exc: Exception) -> ApiError:
    """503 for a create that Redis did not answer: it may have happened or not. Sent again with
    the same submissionId (Retry-After later), it returns the job if it was made, or makes it:
    never two jobs (an Idempotency-Key, as payment APIs have them)."""
    log.warning("job store did not answer a create (submissionId %s): %r", submission_id, exc)
    return ApiError(
        503,
        "unavailable",
        "the job store did not answer, and the job may or may not have been created: submit "
        f"again with submissionId {submission_id!r} to get it, never a second one",
        {"submissionId": submission_id},
        headers={"Retry-After": str(REDIS_RETRY_AFTER_SECONDS)},
    )


async def _require_job(store: JobStore, job_id: str) -> JobRecord:
    record = await store.get(job_id)
    if record is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    return record


async def _resolve_source(
    spec: EvaluateJobSpec, store: JobStore, registry: ModelRegistry
) -> EvaluateJobSpec:
    """Fills `source.runDir` from a job id or a registered model (version, alias or newest)."""
    source = spec.source
    if source.run_dir is not None and (source.job_id is not None or source.model is not None):
        raise _invalid("source", "give exactly one of 'jobId', 'model' and 'runDir'")
    if source.run_dir is not None:
        return spec
    if source.job_id is not None:
        field = "source.jobId"
        job = await store.get(source.job_id)
        if job is None:
            raise _invalid(field, f"no job {source.job_id}")
    else:
        assert source.model is not None
        field = "source.model"
        version = await registry.resolve(source.model, version=source.version, alias=source.alias)
        if version is None:
            raise _invalid(field, f"no matching version of model {source.model!r}")
        if version.status != "READY":
            raise _invalid(field, f"{source.model} version {version.version} is {version.status}")
        job = await store.get(version.source_job)
        if job is None:
            raise _invalid(field, f"the job that trained {source.model} is gone")
    if job.type != JobType.TRAIN or job.state != JobState.SUCCEEDED or not job.workdir:
        raise _invalid(
            field, f"job {job.id} is a {job.state} {job.type} job, not a succeeded train job"
        )
    return spec.model_copy(update={"source": source.model_copy(update={"run_dir": job.workdir})})


@router.post(
    "",
    status_code=201,
    summary="Submit a job",
    response_model=JobRecord,
    responses={
        201: example_response(JOB_EXAMPLE | {"state": "QUEUED"}, "The job was created."),
        200: {
            "description": (
                "The job created earlier with this submissionId, or (validateOnly) the "
                "normalised spec."
            ),
            "content": {
                "application/json": {
                    "examples": {
                        "replay": {"value": JOB_EXAMPLE},
                        "validateOnly": {
                            "value": {
                                "valid": True,
                                "queue": "cpu",
                                "spec": SPEC_EXAMPLES["train"]["value"],
                            }
                        },
                    }
                }
            },
        },
        **error_responses(401, 403, 409, 422, 503),
    },
)
async def submit_job(
    spec: Annotated[JobSpec, Body(openapi_examples=SPEC_EXAMPLES)],
    principal: SubmitAccess,
    store: StoreDep,
    registry: RegistryDep,
    dispatcher: DispatcherDep,
    confinement: ConfinementDep,
    limits: LimitsDep,
) -> JSONResponse:
    """Validates a spec and queues the job; a repeated `submissionId` returns the first job.

    A bad spec gets 422 naming each field path, as does a path outside the directories
    submitted jobs may read (the artifact store and the data roots; README, "Security model").
    With `validateOnly` nothing is created. GPU jobs
    (`resources.gpus > 0`) wait in the `gpu` queue; while no GPU worker runs they stay QUEUED
    with a `NoWorker` event saying so.

    A job submitted without a `submissionId` gets one (`auto-…`). When the job store does not
    answer, the answer is 503 with Retry-After and, in `details.submissionId`, the id to submit
    again with: the job may have been created, and a retry with that id returns it instead of
    making a second one. Clients that retry should always send their own `submissionId`.
    """
    if isinstance(spec, EvaluateJobSpec):
        spec = await _resolve_source(spec, store, registry)
    if problems := await anyio.to_thread.run_sync(spec_problems, spec, confinement):
        raise _confined(problems)
    await check_model_names(spec, principal, registry)
    if spec.validate_only:
        validation = SpecValidation(queue=queue_for(spec), spec=spec_document(spec))
        return JSONResponse(_dump(validation))
    # Every job gets an idempotency key, so that a create whose answer was lost can be sent
    # again without running the job twice (see `_unknown_outcome`).
    submission_id = spec.submission_id or f"auto-{secrets.token_hex(12)}"
    spec = spec.model_copy(update={"submission_id": submission_id})
    # A replay of a submissionId creates nothing, so it needs no slot of the key's job quota.
    replayable = store.keys.submission(principal.name, submission_id)
    slot = await limits.reserve_job(principal.name, replayable)
    created = False
    try:
        record, created = await store.create(spec, owner=principal.name)
    except SubmissionConflict as exc:
        raise ApiError(
            409,
            "submission_conflict",
            f"submissionId {submission_id!r} was used for job {exc.job_id} with another spec",
            {"jobId": exc.job_id},
        ) from None
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise _unknown_outcome(submission_id, exc) from None
    finally:
        try:
            await limits.settle_job(principal.name, slot, record.id if created else None)
        except RedisError:
            log.warning("could not settle the job quota of %s", principal.name, exc_info=True)
    if created:
        JOBS_SUBMITTED.labels(record.type).inc()
        log.info(
            "%s job %s submitted by %s to queue %s",
            record.type,
            record.id,
            principal.name,
            record.queue,
            extra={"job_id": record.id},
        )
        try:
            await anyio.to_thread.run_sync(dispatcher.wake, record.queue)
        except Exception:
            # The job is recorded and queued; the reaper wakes a worker once the broker is back.
            log.warning(
                "could not wake a worker for %s",
                record.id,
                exc_info=True,
                extra={"job_id": record.id},
            )
    return JSONResponse(
        _dump(record),
        status_code=201 if created else 200,
        headers={"Location": f"/v1/jobs/{record.id}"},
    )


@router.get(
    "",
    summary="List jobs",
    responses={
        200: example_response({"items": [JOB_EXAMPLE], "nextCursor": JOB_EXAMPLE["id"]}),
        **error_responses(401, 422),
    },
)
async def list_jobs(
    _principal: ReadAccess,
    store: StoreDep,
    state: Annotated[list[JobState] | None, Query(description="Repeat to match several.")] = None,
    job_type: Annotated[
        list[JobType] | None, Query(alias="type", description="Repeat to match several.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^job-[0-9a-f]+$")] = None,
) -> JobList:
    """Jobs newest first, filtered by state and type, a page at a time."""
    items, next_cursor = await store.list_jobs(
        states=state, types=job_type, limit=limit, cursor=cursor
    )
    return JobList(items=items, next_cursor=next_cursor)


@router.get(
    "/{job_id}",
    summary="Get a job",
    response_model=JobRecord,
    responses={
        200: example_response(JOB_EXAMPLE),
        304: {"description": "Unchanged since the revision named in If-None-Match."},
        **error_responses(401, 404),
    },
    openapi_extra={
        "security": READ_SECURITY,
        "parameters": [
            {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "The ETag of a previous answer: 304 while the job is unchanged.",
                "example": '"job-1935a2f8c1a3f9e2b.42"',
            }
        ],
    },
)
async def get_job(job_id: JobId, request: Request) -> Response:
    """State, progress (step, samples seen, percent, ETA), latest metrics, attempts, error.

    The `ETag` names the job's revision: pollers send it back as `If-None-Match` and get 304
    until the job changes.
    """
    # The API's hottest route (every poller calls it): it authorises and reads what it needs
    # off the request instead of through dependencies, each of which FastAPI resolves (and
    # validates) per request.
    await admit(request, (Scope.READ,))
    documents: JobDocuments = request.app.state.services.documents
    document = await documents.get(job_id)
    if document is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    etag = document.etag(job_id)
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(document.body, media_type="application/json", headers={"ETag": etag})


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    summary="Cancel a job",
    responses={
        202: example_response({"id": JOB_EXAMPLE["id"], "state": "CANCELLING"}),
        **error_responses(401, 403, 404, 409),
    },
)
async def cancel_job(job_id: JobId, principal: SubmitAccess, store: StoreDep) -> CancelResult:
    """Cancels a waiting job at once; a running one stops at its worker's next heartbeat.

    A `submit` key cancels its own jobs; an `admin` key cancels any.
    """
    record = await _require_job(store, job_id)
    if record.owner != principal.name and not principal.allows(Scope.ADMIN):
        raise ApiError(403, "forbidden", f"job {job_id} belongs to {record.owner!r}")
    state = await store.cancel(job_id, requested_by=principal.name)
    if state is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    if state in (JobState.SUCCEEDED, JobState.FAILED):
        raise ApiError(409, "job_finished", f"job {job_id} has already {state.value}")
    return CancelResult(id=job_id, state=state.value)


async def _stream(
    kind: StreamKind,
    job_id: str,
    streams: StreamsDep,
    store: JobStore,
    follow: bool,
    after: str | None,
    limit: int,
) -> Any:
    await _require_job(store, job_id)
    if not follow:
        if kind == "logs":
            logs = await streams.read(kind, job_id, after=after, limit=limit)
            next_after = logs[-1].id if len(logs) == limit else None
            return LogPage(items=logs, next_after=next_after)
        lifecycle = await streams.read(kind, job_id, after=after, limit=limit)
        next_after = lifecycle[-1].id if len(lifecycle) == limit else None
        return EventPage(items=lifecycle, next_after=next_after)

    if not streams.admit_follower():
        raise ApiError(
            503,
            "too_many_followers",
            f"this gateway already streams to {streams.max_followers} followers; retry later",
            headers={"Retry-After": str(FOLLOWER_RETRY_AFTER_SECONDS)},
        )

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for entry in streams.follow(kind, job_id, after=after):
                yield {
                    "event": kind[:-1],
                    "id": entry.id,
                    "data": entry.model_dump_json(by_alias=True),
                }
            final = await store.get(job_id)
            if final is not None and not final.state.is_terminal:
                # Idle or open too long: ended without `end`, the client resumes after its
                # last entry.
                return
            state = final.state.value if final else "UNKNOWN"
            yield {"event": "end", "data": json.dumps({"state": state})}
        finally:
            streams.release_follower()

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})


_STREAM_DOC = (
    "With `follow=true` the answer is a server-sent event stream: one `{kind}` event per entry "
    "(its `id` is the entry id, so `Last-Event-ID` resumes), then an `end` event with the "
    "job's final state once the job has ended. A stream that stays idle or open too long "
    "ends without `end`: reconnect with `Last-Event-ID` to go on where it stopped. Past the "
    "gateway's number of followers the answer is 503 with Retry-After."
)


@router.get(
    "/{job_id}/logs",
    summary="Read or follow a job's logs",
    description=(
        "The job's log lines (training output and lifecycle), kept after its worker is gone. "
        + _STREAM_DOC.format(kind="log")
    ),
    response_model=LogPage,
    responses={
        200: {
            "description": "A page of lines, or an event stream with `follow=true`.",
            "content": {
                "application/json": {"example": {"items": [LOG_EXAMPLE], "nextAfter": None}},
                "text/event-stream": {"example": sse_example("log", LOG_EXAMPLE)},
            },
        },
        **error_responses(401, 404),
    },
)
async def job_logs(
    job_id: JobId,
    _principal: ReadAccess,
    store: StoreDep,
    streams: StreamsDep,
    follow: bool = False,
    after: StreamId = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    last_event_id: LastEventId = None,
) -> Any:
    return await _stream("logs", job_id, streams, store, follow, after or last_event_id, limit)


@router.get(
    "/{job_id}/events",
    summary="Read or follow a job's lifecycle events",
    description=(
        "Created, Started, Checkpointed, Retrying, WorkerLost, Preempted, ModelRegistered, "
        "Succeeded, Failed, Cancelled, NoWorker... " + _STREAM_DOC.format(kind="event")
    ),
    response_model=EventPage,
    responses={
        200: {
            "description": "A page of events, or an event stream with `follow=true`.",
            "content": {
                "application/json": {"example": {"items": [EVENT_EXAMPLE], "nextAfter": None}},
                "text/event-stream": {"example": sse_example("event", EVENT_EXAMPLE)},
            },
        },
        **error_responses(401, 404),
    },
)
async def job_events(
    job_id: JobId,
    _principal: ReadAccess,
    store: StoreDep,
    streams: StreamsDep,
    follow: bool = False,
    after: StreamId = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    last_event_id: LastEventId = None,
) -> Any:
    return await _stream("events", job_id, streams, store, follow, after or last_event_id, limit)


def _list_files(root: Path, job_id: str) -> list[Artifact]:
    artifacts = []
    for directory, _dirs, files in os.walk(root):
        for name in sorted(files):
            path = Path(directory) / name
            stat = path.stat()
            relative = path.relative_to(root).as_posix()
            artifacts.append(
                Artifact(
                    path=relative,
                    size_bytes=stat.st_size,
                    modified_at=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
                    url=f"/v1/jobs/{job_id}/artifacts/{relative}",
                )
            )
            if len(artifacts) >= MAX_ARTIFACTS_LISTED:
                return sorted(artifacts, key=lambda a: a.path)
    return sorted(artifacts, key=lambda a: a.path)


@router.get(
    "/{job_id}/artifacts",
    summary="List a job's artifacts",
    responses={
        200: example_response(
            {
                "root": JOB_EXAMPLE["workdir"],
                "declared": ["report.json"],
                "items": [
                    {
                        "path": "report.json",
                        "sizeBytes": 5120,
                        "modifiedAt": "2025-06-01T02:02:00Z",
                        "url": f"/v1/jobs/{JOB_EXAMPLE['id']}/artifacts/report.json",
                    }
                ],
            }
        ),
        **error_responses(401, 404),
    },
)
async def list_artifacts(job_id: JobId, _principal: ReadAccess, store: StoreDep) -> ArtifactList:
    """Every file in the job's run directory (checkpoints, reports, saved models)."""
    record = await _require_job(store, job_id)
    declared = list((record.result or {}).get("artifacts", []))
    if not record.workdir or not Path(record.workdir).is_dir():
        return ArtifactList(root=record.workdir or "", declared=declared, items=[])
    items = await anyio.to_thread.run_sync(_list_files, Path(record.workdir), job_id)
    return ArtifactList(root=record.workdir, declared=declared, items=items)


@router.get(
    "/{job_id}/artifacts/{path:path}",
    summary="Download an artifact",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file's bytes.",
            "content": {
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "example": '{"schema": "vlarena.metrics/v4", "families": {...}}',
                }
            },
        },
        **error_responses(401, 404),
    },
)
async def download_artifact(
    job_id: JobId,
    path: Annotated[str, PathParam(examples=["report.json"])],
    _principal: ReadAccess,
    store: StoreDep,
) -> FileResponse:
    record = await _require_job(store, job_id)
    if not record.workdir:
        raise ApiError(404, "not_found", f"job {job_id} has no artifacts yet")
    target = JobDir(Path(record.workdir)).file(path)
    if target is None:
        raise ApiError(404, "not_found", f"no artifact {path!r} in job {job_id}")
    return FileResponse(target, filename=target.name)
