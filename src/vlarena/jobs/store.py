"""The job store: jobs, queues, leases and workers in Redis, changed only through Lua scripts."""

from __future__ import annotations

import heapq
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from vlarena.jobs.keys import RedisKeys
from vlarena.jobs.lua import LuaScripts
from vlarena.jobs.records import JobRecord
from vlarena.jobs.spec import (
    CompareJobSpec,
    EvaluateJobSpec,
    JobType,
    TrainJobSpec,
    queue_for,
    spec_document,
    spec_fingerprint,
)
from vlarena.jobs.states import JobState
from vlarena.settings import Settings

# cpu and gpu jobs run in a worker; cluster jobs (nodes > 1) run as Kubernetes Jobs that a
# worker with VLARENA_KUBERNETES_ENABLED launches and follows.
QUEUES: tuple[str, ...] = ("cpu", "gpu", "cluster")
# Longest retry backoff: doubling stops here.
RETRY_BACKOFF_CAP_SECONDS = 300.0


class SubmissionConflict(Exception):
    """A submissionId was reused with a different spec."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


@dataclass(frozen=True)
class Claim:
    """A job a worker now runs, under attempt number `attempt` and the random `token` it drew:
    together, the fencing token each of the attempt's writes shows."""

    job_id: str
    attempt: int
    token: str = ""


@dataclass(frozen=True)
class Finish:
    """Where a job went after an attempt ended, and which queue needs a worker now."""

    state: str
    wake_queue: str | None
    delay_seconds: float


@dataclass(frozen=True)
class RegisteredVersion:
    """A model a succeeded job registers (status READY, or FAILED with a reason)."""

    name: str
    family: str
    path: str
    metrics: dict[str, Any]
    status: str
    status_message: str | None = None


def _record(version: RegisteredVersion) -> str:
    """A version's JSON record, less what the finishing script adds (number, time, job)."""
    record = {
        "name": version.name,
        "family": version.family,
        "status": version.status,
        "statusMessage": version.status_message,
        "path": version.path,
        "metrics": version.metrics,
    }
    return json.dumps(record, separators=(",", ":"))


def new_job_id() -> str:
    """`job-` + creation time in ms (hex) + randomness: ids sort by creation time."""
    return f"job-{time.time_ns() // 1_000_000:011x}{secrets.token_hex(3)}"


class JobStore:
    """Creates, reads, schedules and finishes jobs; every change is one atomic script."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.keys = RedisKeys(settings.key_prefix)
        self.scripts = LuaScripts(
            redis,
            settings.key_prefix,
            settings.log_max_entries,
            1000 * settings.job_retention_seconds,
        )
        self.worker_ttl_ms = int(3000 * settings.heartbeat_seconds)
        self.lease_ms = int(1000 * settings.lease_seconds)
        self.backoff_ms = int(1000 * settings.retry_backoff_seconds)
        self.poison_job_limit = settings.poison_job_limit
        # A gap between reaper passes longer than this is an outage (see the `reap` script).
        self.outage_ms = max(self.lease_ms // 2, int(3000 * settings.reaper_interval_seconds))

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # Submitting and reading.

    async def create(
        self, spec: TrainJobSpec | EvaluateJobSpec | CompareJobSpec, *, owner: str
    ) -> tuple[JobRecord, bool]:
        """Records and enqueues a job; returns it and whether it is new.

        A spec with a `submissionId` already used by `owner` returns the job made then, or raises
        `SubmissionConflict` when the two specs differ.
        """
        document = spec_document(spec)
        fingerprint = spec_fingerprint(document)
        fields = {
            "type": spec.type,
            "spec": json.dumps(document, separators=(",", ":")),
            "specSha256": fingerprint,
            "owner": owner,
            "maxRetries": str(spec.max_retries),
            "submissionId": spec.submission_id or "",
        }
        if spec.active_deadline_seconds is not None:
            fields["activeDeadlineSeconds"] = str(spec.active_deadline_seconds)
        submission_key = (
            self.keys.submission(owner, spec.submission_id) if spec.submission_id else ""
        )
        created, job_id = await self.scripts(
            "create",
            new_job_id(),
            submission_key,
            json.dumps(fields),
            spec.priority,
            queue_for(spec),
            self.worker_ttl_ms,
        )
        if not created:
            stored = await self.redis.hget(self.keys.job(job_id), "specSha256")
            if stored != fingerprint:
                raise SubmissionConflict(job_id)
        record = await self.get(job_id)
        assert record is not None, job_id
        return record, bool(created)

    async def get(self, job_id: str) -> JobRecord | None:
        fields = await self.fields(job_id)
        return JobRecord.from_hash(fields) if fields else None

    async def fields(self, job_id: str) -> dict[str, str]:
        """The job's hash as stored (empty for an unknown job)."""
        # The client decodes replies (`decode_responses=True`): fields and values are strings.
        return cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))

    async def fields_if_changed(self, job_id: str, revision: str) -> dict[str, str] | None:
        """The job's hash, or None while its revision is still `revision`."""
        reply = await self.scripts("read_if_changed", job_id, revision)
        if isinstance(reply, str):
            return None
        return dict(zip(reply[::2], reply[1::2], strict=True))

    async def list_jobs(
        self,
        *,
        states: list[JobState] | None = None,
        types: list[JobType] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """Jobs newest first, `limit` at a time; pass the returned cursor for the next page."""
        any_state: list[JobState | None] = [None]
        any_type: list[JobType | None] = [None]
        indexes = [
            self.keys.jobs_index(state, job_type)
            for state in (states or any_state)
            for job_type in (types or any_type)
        ]
        upper = f"({cursor}" if cursor else "+"
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zrevrangebylex(index, upper, "-", start=0, num=limit + 1)
            pages = await pipe.execute()
        ids = heapq.nlargest(limit + 1, {i for page in pages for i in page})
        next_cursor = ids[limit - 1] if len(ids) > limit else None
        ids = ids[:limit]
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.keys.job(job_id))
            hashes = await pipe.execute()
        if not all(hashes):
            # Records past their retention are still indexed until a reaper passes: skip them
            # and drop them from the indexes now.
            await self.scripts("forget_expired", 1000)
        return [JobRecord.from_hash(h) for h in hashes if h], next_cursor

    async def cancel(self, job_id: str, *, requested_by: str) -> JobState | None:
        """Cancels a waiting job now, or asks a running one's worker to stop it."""
        state = await self.scripts("cancel", job_id, requested_by)
        return JobState(state) if state else None

    # Running: what workers do.

    async def claim(self, queue: str, worker_id: str) -> Claim | None:
        """Takes the first job of `queue` (highest priority, then oldest) under a new lease."""
        token = secrets.token_hex(16)
        claimed = await self.scripts("claim", queue, worker_id, self.lease_ms, token)
        return Claim(claimed[0], int(claimed[1]), token) if claimed else None

    async def renew(self, claim: Claim) -> str:
        """Extends the lease; returns RUNNING, CANCELLING, DEADLINE or FENCED."""
        return await self.scripts("renew", claim.job_id, claim.attempt, claim.token, self.lease_ms)

    async def write(
        self,
        claim: Claim,
        *,
        fields: dict[str, str] | None = None,
        logs: list[tuple[str, str]] | None = None,
        events: list[tuple[str, str, str]] | None = None,
    ) -> bool:
        """Updates fields of the job and appends log lines and events, if `claim` still holds."""
        payload: dict[str, Any] = {}
        if fields:
            payload["set"] = fields
        if logs:
            payload["logs"] = logs
        if events:
            payload["events"] = events
        return bool(
            await self.scripts(
                "write", claim.job_id, claim.attempt, claim.token, json.dumps(payload)
            )
        )

    async def finish(
        self,
        claim: Claim,
        outcome: str,
        *,
        message: str = "",
        result: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        samples_seen: int | None = None,
        models: list[RegisteredVersion] | None = None,
        code: str | None = None,
    ) -> Finish:
        """Ends an attempt: succeeded, failed, rejected, deterministic, cancelled, preempted or
        deadline; `code` names the error of a failed one (the job's `error.code`).

        Safe to send again when its reply was lost: a finish that landed answers the same.
        """
        payload: dict[str, Any] = {"message": message}
        if code:
            payload["code"] = code
        if outcome == "succeeded":
            final = {"values": metrics or {}, "final": True, "samplesSeen": samples_seen}
            payload["result"] = json.dumps(result or {})
            payload["metrics"] = json.dumps(final | {"updatedAt": int(time.time() * 1000)})
            payload["models"] = [
                {"name": m.name, "family": m.family, "status": m.status, "record": _record(m)}
                for m in models or []
            ]
        state, queue, delay = await self.scripts(
            "finish",
            claim.job_id,
            claim.attempt,
            claim.token,
            outcome,
            json.dumps(payload),
            self.backoff_ms,
            int(1000 * RETRY_BACKOFF_CAP_SECONDS),
        )
        return Finish(state, queue or None, float(delay) / 1000)

    async def reap(self, batch: int = 100) -> list[str]:
        """Requeues, after a backoff, jobs whose lease lapsed (failing those lost too often:
        the poison-job limit), and failed jobs whose backoff is over; after an outage of Redis,
        restarts every lease instead.

        Returns one queue name per job that became runnable, to wake a worker for each.
        """
        return await self.scripts(
            "reap",
            batch,
            self.worker_ttl_ms,
            self.lease_ms,
            self.outage_ms,
            self.backoff_ms,
            int(1000 * RETRY_BACKOFF_CAP_SECONDS),
            self.poison_job_limit,
            *QUEUES,
        )

    async def cluster_cleanups(self, batch: int = 100) -> list[tuple[str, int]]:
        """Multi-node jobs whose lost attempts may have left Kubernetes Jobs running, each with
        the last such attempt: (job id, attempt)."""
        entries = cast(
            list[tuple[str, float]],
            await self.redis.zrange(self.keys.cluster_cleanup(), 0, batch - 1, withscores=True),
        )
        return [(job_id, int(attempt)) for job_id, attempt in entries]

    async def cluster_cleaned(self, job_id: str, attempt: int) -> None:
        """Records that the Kubernetes Jobs of `job_id`'s attempts up to `attempt` are gone."""
        await self.scripts("cluster_cleaned", job_id, attempt)

    async def waiting(self, queue: str) -> int:
        """Jobs waiting in `queue` (not counting those in retry backoff)."""
        return await self.redis.zcard(self.keys.queue(queue))

    async def heartbeat(self, worker_id: str, queues: list[str], info: dict[str, str]) -> None:
        await self.scripts("heartbeat", worker_id, self.worker_ttl_ms, json.dumps(info), *queues)

    async def depart(self, worker_id: str, queues: list[str]) -> None:
        await self.scripts("depart", worker_id, *queues)

    # Gauges for /metrics, read at scrape time.

    async def counts(self) -> dict[str, Any]:
        """Jobs by state and type, jobs waiting per queue, live workers per queue, and Redis's
        memory: used and `maxmemory` (0: unbounded)."""
        now_ms = int(time.time() * 1000)
        pairs = [(s, t) for s in JobState for t in JobType]
        async with self.redis.pipeline(transaction=False) as pipe:
            for state, job_type in pairs:
                pipe.zcard(self.keys.jobs_index(state.value, job_type.value))
            for queue in QUEUES:
                pipe.zcard(self.keys.queue(queue))
            for queue in QUEUES:
                pipe.zcount(self.keys.workers_queue(queue), now_ms - self.worker_ttl_ms, "+inf")
            pipe.info("memory")
            *values, memory = await pipe.execute()
        n = len(pairs)
        return {
            "jobs": {(s.value, t.value): v for (s, t), v in zip(pairs, values[:n], strict=True)},
            "waiting": dict(zip(QUEUES, values[n : n + len(QUEUES)], strict=True)),
            "workers": dict(zip(QUEUES, values[n + len(QUEUES) :], strict=True)),
            "memory": {"used": memory["used_memory"], "max": memory["maxmemory"]},
        }


def connect(settings: Settings, *, max_connections: int | None = None) -> Redis:
    """An asyncio Redis client for `settings.redis_url`, decoding replies to str.

    A command that gets no answer within `redis_timeout_seconds` is sent once more, then raises
    TimeoutError: a stalled Redis is an error the caller handles, not a hang. With
    `max_connections`, the client opens no more connections than that: a command waits (up to
    5 s, then ConnectionError) for one to be free.
    """
    timeouts: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout_seconds,
        "socket_connect_timeout": settings.redis_timeout_seconds,
        # One quiet retry (a pooled connection that a Redis restart closed); past it the caller
        # decides. The scripts that move a job are safe to send twice (`vlarena.jobs.lua`).
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.1), 1),
    }
    if max_connections is None:
        return Redis.from_url(
            settings.redis_url, decode_responses=True, health_check_interval=30, **timeouts
        )
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=5,
        decode_responses=True,
        health_check_interval=30,
        **timeouts,
    )
    return Redis.from_pool(pool)
