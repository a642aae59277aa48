"""The Redis key layout of the job platform, shared by the Python store and its Lua scripts.

Every key starts with the configured prefix (`VLARENA_KEY_PREFIX`, default `vlarena:`).

Jobs
- `job:{id}` (hash): one job. `id`, `type`, `state`, `queue`, `priority`, `sequence`, `spec`
  (JSON), `specSha256`, `owner`, `submissionId`, `maxRetries`, `retries`,
  `activeDeadlineSeconds`; `createdAt`, `updatedAt`, `startedAt`, `finishedAt`, `deadlineAt`
  (epoch ms, Redis clock); `revision` (bumped by every change); `attempt` (number of the
  current attempt), `attemptToken` (random, drawn by the worker that claimed it: with the
  attempt number, the fencing token every write of the attempt must show), `lostAttempts`
  (attempts whose worker was lost), `worker`, `workdir`; `progress`, `metrics`, `checkpoint`,
  `error`, `result` (JSON); `cancelRequested`; `attempt:{n}` (JSON record of attempt n);
  `model:{name}` (version registered by this job).
- `job:{id}:logs` (stream): log lines (`level`, `message`, `attempt`, `source`), capped at
  `VLARENA_LOG_MAX_ENTRIES`.
- `job:{id}:events` (stream): lifecycle events (`level`, `reason`, `message`, `attempt`).
- `jobs:all`, `jobs:type:{type}`, `jobs:state:{state}`, `jobs:state:{state}:type:{type}`
  (sorted sets, all scores 0): job ids by filter; ids sort by creation time, so lexicographic
  ranges page through them newest first.
- `submission:{owner}:{submissionId}` (string): the job an idempotency key created.
- `jobs:expiring` (sorted set): finished jobs, score = when their keys above expire
  (`VLARENA_JOB_RETENTION_SECONDS` after they ended); the reaper then drops them from the
  indexes.

Scheduling
- `queue:{queue}` (sorted set): jobs waiting for a worker of `queue` (`cpu`, `gpu`), score
  `-priority * 2^40 + sequence`: higher priority first, then submission order.
- `jobs:sequence` (string): the counter that numbers submissions (`sequence` in `job:{id}`).
- `delayed` (sorted set): failed jobs waiting out their retry backoff, score = when they may run.
- `leases` (sorted set): running jobs, score = when their lease lapses (ms, Redis clock).
- `claim:{token}` (string, expires after a lease): the job and attempt a claim with this token
  took, so that a claim sent again after its reply was lost takes nothing more.
- `reaper:lastPass` (string): when a reaper last passed (ms, Redis clock). A longer gap than
  usual means no worker could reach Redis (an outage, a stall, a restart): the next pass
  restarts every lease instead of reaping them, so an outage costs no attempt.
- `cluster:cleanup` (sorted set): multi-node jobs whose lost attempts may have left Kubernetes
  Jobs behind, score = the last such attempt; a Kubernetes worker's reaper deletes their Jobs.
- `workers`, `workers:queue:{queue}` (sorted sets): worker ids, score = last heartbeat (ms).
- `worker:{id}` (hash, expires): a worker's host, pid, queues, start time and current job.

Model registry
- `models` (sorted set, all scores 0): registered model names.
- `model:{name}` (hash): `name`, `family`, `latestVersion`, `createdAt`, `updatedAt`.
- `model:{name}:versions` (hash): version number → JSON record (status, source job, metrics,
  path).
- `model:{name}:aliases` (hash): alias (`production`, `candidate`, any name) → version number.
- `model:{name}:owner` (hash): `key`, `team` ('' for none), `createdAt`: who owns the name
  (`vlarena.jobs.ownership`): the key of the job that registered its first version. A model
  without one was registered before owners were recorded: the admins'.
- `caller:{key}` (hash): `team`, `admin` ('1' or '0'): an API key as it was when it last
  submitted a job, read when its jobs register versions.
- `registry:events` (stream): versions registered and aliases set or removed, for the Triton
  sync sidecar to follow.

Limits (the gateway's, per API key name)
- `limits:requests:{key}` (string, expires with its window): requests made in the window.
- `limits:active-jobs:{key}` (sorted set): the key's jobs not yet ended, and reservations
  (`reserve:{token}`, score = when made) of jobs being created.

Every state change goes through one Lua script (`vlarena.jobs.lua`), so a job's hash, its indexes,
its queue entry, its lease and its events change together or not at all.
"""

from __future__ import annotations

import re

KEY_TEMPLATES: dict[str, str] = {
    "job": "job:{id}",
    "job_logs": "job:{id}:logs",
    "job_events": "job:{id}:events",
    "jobs_all": "jobs:all",
    "jobs_type": "jobs:type:{type}",
    "jobs_state": "jobs:state:{state}",
    "jobs_state_type": "jobs:state:{state}:type:{type}",
    "jobs_expiring": "jobs:expiring",
    "queue": "queue:{queue}",
    "sequence": "jobs:sequence",
    "delayed": "delayed",
    "leases": "leases",
    "claim": "claim:{token}",
    "reaper_pass": "reaper:lastPass",
    "cluster_cleanup": "cluster:cleanup",
    "submission": "submission:{owner}:{submission_id}",
    "workers": "workers",
    "workers_queue": "workers:queue:{queue}",
    "worker": "worker:{id}",
    "models": "models",
    "model": "model:{name}",
    "model_versions": "model:{name}:versions",
    "model_aliases": "model:{name}:aliases",
    "model_owner": "model:{name}:owner",
    "caller": "caller:{key}",
    "registry_events": "registry:events",
    "limit_requests": "limits:requests:{key}",
    "limit_active_jobs": "limits:active-jobs:{key}",
}

_FIELD = re.compile(r"\{(\w+)\}")


class RedisKeys:
    """Builds the keys of the layout above under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _key(self, template: str, /, **parts: str) -> str:
        return self.prefix + KEY_TEMPLATES[template].format(**parts)

    def job(self, job_id: str) -> str:
        return self._key("job", id=job_id)

    def job_logs(self, job_id: str) -> str:
        return self._key("job_logs", id=job_id)

    def job_events(self, job_id: str) -> str:
        return self._key("job_events", id=job_id)

    def jobs_index(self, state: str | None = None, job_type: str | None = None) -> str:
        """The index of jobs in `state` and of `job_type` (either may be None: any)."""
        if state and job_type:
            return self._key("jobs_state_type", state=state, type=job_type)
        if state:
            return self._key("jobs_state", state=state)
        if job_type:
            return self._key("jobs_type", type=job_type)
        return self._key("jobs_all")

    def jobs_expiring(self) -> str:
        return self._key("jobs_expiring")

    def limit_requests(self, key_name: str) -> str:
        return self._key("limit_requests", key=key_name)

    def limit_active_jobs(self, key_name: str) -> str:
        return self._key("limit_active_jobs", key=key_name)

    def queue(self, queue: str) -> str:
        return self._key("queue", queue=queue)

    def delayed(self) -> str:
        return self._key("delayed")

    def leases(self) -> str:
        return self._key("leases")

    def reaper_pass(self) -> str:
        return self._key("reaper_pass")

    def cluster_cleanup(self) -> str:
        return self._key("cluster_cleanup")

    def submission(self, owner: str, submission_id: str) -> str:
        return self._key("submission", owner=owner, submission_id=submission_id)

    def workers(self) -> str:
        return self._key("workers")

    def workers_queue(self, queue: str) -> str:
        return self._key("workers_queue", queue=queue)

    def worker(self, worker_id: str) -> str:
        return self._key("worker", id=worker_id)

    def models(self) -> str:
        return self._key("models")

    def model(self, name: str) -> str:
        return self._key("model", name=name)

    def model_versions(self, name: str) -> str:
        return self._key("model_versions", name=name)

    def model_aliases(self, name: str) -> str:
        return self._key("model_aliases", name=name)

    def model_owner(self, name: str) -> str:
        return self._key("model_owner", name=name)

    def caller(self, key_name: str) -> str:
        return self._key("caller", key=key_name)

    def registry_events(self) -> str:
        return self._key("registry_events")


def lua_key_functions() -> str:
    """Lua functions `k_<name>(...)` building the same keys from the prefix `P`."""
    lines = []
    for name, template in KEY_TEMPLATES.items():
        params = _FIELD.findall(template)
        pieces = []
        for i, literal in enumerate(_FIELD.split(template)):
            if i % 2:
                pieces.append(literal)
            elif literal:
                pieces.append(f"'{literal}'")
        body = " .. ".join(["P", *pieces])
        lines.append(f"local function k_{name}({', '.join(params)}) return {body} end")
    return "\n".join(lines)
