"""Faults that must lose no work: failures classified (never retried, or retried after a
backoff, up to the poison-job limit), cancels and deadlines in every phase, a watchdog for
stalled runners, Redis stalls mid-run and at the final write, fencing that survives a Redis
rollback, Kubernetes Jobs of lost attempts deleted, and job submissions safe to retry.

Attempts run in this process (`JobExecution` with a stub runner) against a real redis-server;
the tests that stop Redis (SIGSTOP) start one of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from multinode.fake_kubernetes import FakeKubernetes, Step
from redis_servers import PrivateRedis
from vlarena.client.api import GatewayClient
from vlarena.errors import DeterministicFailure, StopRequested, UserInputError
from vlarena.gateway.app import create_app
from vlarena.jobs.spec import JOB_SPEC_ADAPTER
from vlarena.jobs.store import Claim, JobStore, connect
from vlarena.rundirs import AttemptOwned, AttemptsDir
from vlarena.settings import Settings
from vlarena.worker import execution
from vlarena.worker.execution import JobExecution
from vlarena.worker.loop import BackgroundLoop

TRAIN = {
    "type": "train",
    "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
    "dataset": {"name": "fashion-grid"},
    "budget": {"samples": 64},
}


def spec(base: dict[str, Any] = TRAIN, **fields: Any) -> Any:
    return JOB_SPEC_ADAPTER.validate_python(base | fields)


class NonFiniteLoss(DeterministicFailure):
    """What the trainer raises on a NaN loss."""


class Runtime:
    """What an attempt needs of its worker process, as `WorkerRuntime` gives it, plus a reaper
    thread that passes as every worker's does."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.shutdown = threading.Event()
        self.loop = BackgroundLoop("test-store")
        self.store: JobStore = self.call(self._store())
        self.abandoned: list[str] = []
        self.on_abandon: Callable[[], None] = lambda: None
        self._reaping = threading.Event()

    async def _store(self) -> JobStore:
        return JobStore(connect(self.settings), self.settings)

    def call(self, coroutine: Any, timeout: float | None = None) -> Any:
        # As long as one store call may take (its timeout, one retry) and a margin.
        return self.loop.call(coroutine, timeout or 2 * self.settings.redis_timeout_seconds + 1)

    def wake(self, queue: str) -> None:
        pass

    def abandon(self, reason: str) -> None:
        self.abandoned.append(reason)
        self.on_abandon()

    def start_reaper(self) -> None:
        self.call(self.store.reap())  # the pass before the test's: reapers ran all along

        def reap() -> None:
            while not self._reaping.wait(self.settings.reaper_interval_seconds):
                with contextlib.suppress(Exception):
                    self.call(self.store.reap())

        threading.Thread(target=reap, daemon=True).start()

    def close(self) -> None:
        self._reaping.set()
        with contextlib.suppress(Exception):
            self.call(self.store.redis.aclose(), 5)
        self.loop.close()


@contextlib.contextmanager
def runtime_for(redis_url: str, tmp_path: Path, **fields: Any) -> Iterator[Runtime]:
    settings = Settings(
        redis_url=redis_url,
        key_prefix=f"flt-{uuid.uuid4().hex[:8]}:",
        artifact_dir=tmp_path / "artifacts",
        heartbeat_seconds=0.2,
        reaper_interval_seconds=0.2,
        **({"retry_backoff_seconds": 0} | fields),
    )
    runtime = Runtime(settings)
    try:
        yield runtime
    finally:
        runtime.close()


def run_attempt(
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    runner: Callable[[JobExecution, dict[str, Any]], dict[str, Any]],
    earlier: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Submits a train job, runs its first attempt with `runner(execution, kwargs)` as its ML
    core (after an earlier attempt's `earlier` record fields, where given), and returns the job
    as the API shows it."""
    job, _ = runtime.call(runtime.store.create(spec(**fields), owner="t"))
    if earlier:
        key = runtime.store.keys.job(job.id)
        runtime.call(runtime.store.redis.hset(key, mapping=earlier))
    claim = runtime.call(runtime.store.claim("cpu", "w1"))
    assert claim is not None and claim.job_id == job.id
    attempt = JobExecution(runtime, claim)

    def core(document: dict[str, Any], workdir: Path, **kwargs: Any) -> dict[str, Any]:
        return runner(attempt, kwargs)

    monkeypatch.setitem(execution.JOB_RUNNERS, "train", core)
    attempt.run()
    record = runtime.call(runtime.store.get(job.id))
    return record.model_dump(mode="json", by_alias=True)


def until(predicate: Callable[[], Any], timeout: float = 10) -> None:
    """Waits for `predicate` (a runner's wait that never outlasts a broken test)."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


def succeed(attempt: JobExecution, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"metrics": {"accuracy": 0.5}, "models": []}


# 1. Failures classified.


@pytest.mark.parametrize(
    ("error", "state", "code"),
    [
        (UserInputError("dataset.uri: no such manifest"), "FAILED", "InvalidInput"),
        (NonFiniteLoss("the loss is nan at step 12"), "FAILED", "NonFiniteLoss"),
        (OSError("No space left on device"), "RETRYING", "AttemptFailed"),
    ],
)
def test_user_and_deterministic_failures_end_at_once_others_retry_after_a_backoff(
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    state: str,
    code: str,
) -> None:
    def fail(attempt: JobExecution, kwargs: dict[str, Any]) -> dict[str, Any]:
        raise error

    with runtime_for(redis_url, tmp_path, retry_backoff_seconds=60) as runtime:
        job = run_attempt(runtime, monkeypatch, fail, maxRetries=3)
        assert (job["state"], job["error"]["code"]) == (state, code)
        assert str(error) in job["error"]["message"]
        assert job["retries"] == (1 if state == "RETRYING" else 0)
        # A retry waits out its backoff, off the queue.
        assert runtime.call(runtime.store.waiting("cpu")) == 0


def test_a_lost_worker_is_requeued_after_a_backoff_and_a_poison_job_fails(redis_url: str) -> None:
    async def check(store: JobStore) -> None:
        job, _ = await store.create(spec(maxRetries=5), owner="t")
        assert await store.claim("cpu", "w1") is not None
        await asyncio.sleep(0.3)  # the lease lapses: w1 looks dead
        assert await store.reap() == []  # requeued, but only after the backoff
        assert (await store.get(job.id)).state == "RETRYING"
        assert await store.claim("cpu", "w2") is None
        await asyncio.sleep(0.3)
        assert await store.reap() == ["cpu"]
        assert await store.claim("cpu", "w2") is not None
        await asyncio.sleep(0.3)  # w2 dies too: two lost attempts are the limit
        await store.reap()
        record = await store.get(job.id)
        assert record is not None and record.state == "FAILED"
        assert record.error is not None and record.error.code == "PoisonJob"
        assert [a.outcome for a in record.attempts] == ["lost", "lost"]

    async def main() -> None:
        settings = Settings(
            redis_url=redis_url,
            key_prefix=f"flt-{uuid.uuid4().hex[:8]}:",
            lease_seconds=0.2,
            retry_backoff_seconds=0.25,
            poison_job_limit=2,
        )
        client = connect(settings)
        try:
            await check(JobStore(client, settings))
        finally:
            await client.aclose()

    asyncio.run(main())


def test_a_resumed_attempt_whose_training_was_done_reports_its_samples_seen(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def resumes_after_training(attempt: JobExecution, kwargs: dict[str, Any]) -> dict[str, Any]:
        # The checkpoint says training is done: no training progress, only the evaluation's.
        kwargs["on_event"]({"type": "progress", "phase": "evaluate", "done": 1, "total": 2})
        kwargs["on_event"]({"type": "metrics", "samplesSeen": 64, "metrics": {"accuracy": 0.5}})
        return succeed(attempt, kwargs)

    with runtime_for(redis_url, tmp_path) as runtime:
        # The attempt that trained reported its progress, then lost its worker.
        progress = {"phase": "train", "samplesSeen": 64, "totalSamples": 64, "attempt": 1}
        earlier = {"progress": json.dumps(progress)}
        job = run_attempt(runtime, monkeypatch, resumes_after_training, earlier)
        assert job["state"] == "SUCCEEDED"
        assert job["metrics"]["samplesSeen"] == 64
        assert (job["progress"]["samplesSeen"], job["progress"]["totalSamples"]) == (64, 64)


def test_a_job_level_phase_names_no_run(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def compares(attempt: JobExecution, kwargs: dict[str, Any]) -> dict[str, Any]:
        on_event = kwargs["on_event"]
        on_event({"type": "progress", "phase": "evaluate", "family": "vl-jepa", "seed": 0})
        seen.append(runtime.call(runtime.store.get(attempt.claim.job_id)).progress.run)
        on_event({"type": "progress", "phase": "export", "done": 0, "total": 2})
        return succeed(attempt, kwargs)

    seen: list[str | None] = []
    with runtime_for(redis_url, tmp_path) as runtime:
        job = run_attempt(runtime, monkeypatch, compares)
        assert seen == ["vl-jepa seed 0"]
        assert job["progress"]["phase"] == "export" and job["progress"].get("run") is None


# 2. Cancel and deadline in every phase; the watchdog.


@pytest.mark.parametrize(("stop", "state"), [("cancel", "CANCELLED"), ("deadline", "FAILED")])
def test_a_runner_that_ignores_stop_requests_does_not_end_succeeded(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: str, state: str
) -> None:
    def evaluate(attempt: JobExecution, kwargs: dict[str, Any]) -> dict[str, Any]:
        if stop == "cancel":
            runtime.call(runtime.store.cancel(attempt.claim.job_id, requested_by="t"))
        # An evaluation polls nothing: it ends when it ends, after the request.
        until(lambda: attempt.stop_reason == stop)
        return succeed(attempt, kwargs)

    with runtime_for(redis_url, tmp_path) as runtime:
        deadline = {"activeDeadlineSeconds": 1} if stop == "deadline" else {}
        job = run_attempt(runtime, monkeypatch, evaluate, **deadline)
        assert job["state"] == state
        assert job["models"] == [] and job["result"] is None


def test_a_stalled_runner_that_stops_when_asked_is_retried(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stalls(attempt: JobExecution, kwargs: dict[str, Any]) -> dict[str, Any]:
        until(kwargs["should_stop"])
        if kwargs["should_stop"]():
            raise StopRequested("stopped at a safe point")
        return succeed(attempt, kwargs)

    with runtime_for(
        redis_url, tmp_path, stall_timeout_seconds=0.5, stall_grace_seconds=30
    ) as runtime:
        job = run_attempt(runtime, monkeypatch, stalls, maxRetries=1)
        assert (job["state"], job["error"]["code"]) == ("RETRYING", "Stalled")
        assert runtime.abandoned == []


def test_a_stalled_runner_that_never_returns_is_recorded_and_its_worker_ended(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exited = threading.Event()

    def hangs(attempt: JobExecution, kwargs: dict[str, Any]) -> dict[str, Any]:
        exited.wait(10)  # a hung read: deaf to should_stop; the process exit ends it
        return succeed(attempt, kwargs)

    with runtime_for(
        redis_url, tmp_path, stall_timeout_seconds=0.5, stall_grace_seconds=0.5
    ) as runtime:
        runtime.on_abandon = exited.set
        job = run_attempt(runtime, monkeypatch, hangs, maxRetries=1)
        # Recorded before the worker ended: the job waits for another worker.
        assert (job["state"], job["error"]["code"]) == ("RETRYING", "Stalled")
        assert [a["outcome"] for a in job["attempts"]] == ["failed"]
        assert len(runtime.abandoned) == 1 and "did not stop" in runtime.abandoned[0]


# 1 and 3. Redis outages and the final write.


def test_a_redis_stall_at_the_final_write_shorter_than_the_lease_still_succeeds(
    private_redis: PrivateRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def finishes_into_a_stall(attempt: JobExecution, kwargs: dict[str, Any]) -> dict[str, Any]:
        private_redis.stall(2.5)  # longer than a store call may take, shorter than the lease
        return succeed(attempt, kwargs)

    with runtime_for(
        private_redis.url, tmp_path, lease_seconds=6, redis_timeout_seconds=0.3
    ) as runtime:
        runtime.start_reaper()
        job = run_attempt(runtime, monkeypatch, finishes_into_a_stall, maxRetries=1)
        assert job["state"] == "SUCCEEDED"
        assert [a["outcome"] for a in job["attempts"]] == ["succeeded"]


def test_a_max_retries_0_job_survives_a_redis_stall_at_its_final_write_past_the_lease(
    private_redis: PrivateRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def finishes_into_a_stall(attempt: JobExecution, kwargs: dict[str, Any]) -> dict[str, Any]:
        private_redis.stall(3.5)  # the 40 s stall, scaled to a 1.5 s lease
        return succeed(attempt, kwargs)

    with runtime_for(
        private_redis.url, tmp_path, lease_seconds=1.5, redis_timeout_seconds=0.3
    ) as runtime:
        runtime.start_reaper()
        job = run_attempt(runtime, monkeypatch, finishes_into_a_stall, maxRetries=0)
        assert job["state"] == "SUCCEEDED"
        assert [a["outcome"] for a in job["attempts"]] == ["succeeded"]


def test_a_redis_outage_mid_run_longer_than_the_lease_spends_no_retry(
    private_redis: PrivateRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def runs_through_an_outage(attempt: JobExecution, kwargs: dict[str, Any]) -> dict[str, Any]:
        private_redis.stall(3.5)
        time.sleep(4)  # training on while nothing reaches Redis
        renewed = attempt.runtime.call(attempt.runtime.store.renew(attempt.claim))
        assert renewed == "RUNNING"
        kwargs["on_event"]({"type": "log", "level": "info", "message": "still here"})
        return succeed(attempt, kwargs)

    with runtime_for(
        private_redis.url, tmp_path, lease_seconds=1.5, redis_timeout_seconds=0.3
    ) as runtime:
        runtime.start_reaper()
        job = run_attempt(runtime, monkeypatch, runs_through_an_outage, maxRetries=1)
        assert (job["state"], job["retries"]) == ("SUCCEEDED", 0)
        assert [a["outcome"] for a in job["attempts"]] == ["succeeded"]


# 4. Fencing that survives a Redis rollback.


def test_fencing_survives_a_redis_rollback_that_hands_an_attempt_out_twice(
    redis_url: str, tmp_path: Path
) -> None:
    with runtime_for(redis_url, tmp_path) as runtime:
        store = runtime.store
        plain = redis.Redis.from_url(redis_url)
        pattern = f"{runtime.settings.key_prefix}*"
        job, _ = runtime.call(store.create(spec(), owner="t"))
        # What the AOF held when Redis was killed: the job, not yet claimed.
        saved = {key: plain.dump(key) for key in plain.scan_iter(pattern)}
        first = runtime.call(store.claim("cpu", "w1"))
        plain.delete(*plain.scan_iter(pattern))
        for key, value in saved.items():
            plain.restore(key, 0, value)
        second = runtime.call(store.claim("cpu", "w2"))
        assert first.attempt == second.attempt == 1 and first.token != second.token
        # The stale claim can neither renew, write nor finish.
        assert runtime.call(store.renew(first)) == "FENCED"
        assert not runtime.call(store.write(first, logs=[("info", "stale")]))
        assert runtime.call(store.finish(first, "succeeded")).state == "FENCED"
        assert runtime.call(store.finish(second, "succeeded")).state == "SUCCEEDED"
        # Nor can it share the attempt's directory.
        attempts = AttemptsDir.of_job(tmp_path, job.id)
        workdir = attempts.start(1, owner=second.token)
        with pytest.raises(AttemptOwned):
            attempts.start(1, owner=first.token)
        assert attempts.start(1, owner=second.token) == workdir


def test_a_final_write_sent_again_after_its_reply_was_lost_answers_the_same(
    redis_url: str, tmp_path: Path
) -> None:
    with runtime_for(redis_url, tmp_path) as runtime:
        store = runtime.store
        job, _ = runtime.call(store.create(spec(), owner="t"))
        claim: Claim = runtime.call(store.claim("cpu", "w1"))
        assert runtime.call(store.finish(claim, "failed", message="boom")).state == "RETRYING"
        assert runtime.call(store.finish(claim, "failed", message="boom")).state == "RETRYING"
        record = runtime.call(store.get(job.id))
        assert record.retries == 1 and len(record.attempts) == 1


# 5. Kubernetes Jobs of lost attempts.


def test_the_reaper_deletes_the_kubernetes_jobs_of_lost_attempts(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery import Celery

    from vlarena.worker.runtime import WorkerRuntime

    for name in ("KUBERNETES_SERVICE_HOST", "POD_NAMESPACE", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    multi_node = TRAIN | {"resources": {"nodes": 2, "gpus": 1}}
    with FakeKubernetes([Step([], {"active": 2})]) as fake:
        settings = Settings(
            redis_url=redis_url,
            key_prefix=f"flt-{uuid.uuid4().hex[:8]}:",
            artifact_dir=tmp_path,
            lease_seconds=0.2,
            retry_backoff_seconds=0,
            kubernetes_enabled=True,
            kubernetes_image="vlarena-worker:test",
            kubernetes_kubeconfig=fake.kubeconfig(tmp_path),
        )
        runtime = WorkerRuntime(settings, ["cluster"], Celery("vlarena-test"))
        try:
            store = runtime.store
            ended, requeued = (
                runtime.call(store.create(spec(multi_node, maxRetries=n), owner="t"))[0]
                for n in (0, 1)
            )
            for _ in (ended, requeued):
                claim = runtime.call(store.claim("cluster", "w1"))
                fake.jobs[f"{claim.job_id}-{claim.attempt}"] = {"metadata": {}}  # its pods run
            time.sleep(0.3)  # both workers vanish with their Kubernetes Jobs still running
            runtime.call(store.reap())
            assert runtime.call(store.get(ended.id)).state == "FAILED"
            assert runtime.call(store.get(requeued.id)).state == "RETRYING"
            runtime.delete_cluster_jobs()
        finally:
            runtime.loop.close()
    deleted = {c.path.rsplit("/", 1)[1] for c in fake.calls if c.method == "DELETE"}
    assert deleted == {f"{ended.id}-1", f"{requeued.id}-1"}
    assert fake.jobs == {}
    assert not redis.Redis.from_url(redis_url).exists(f"{settings.key_prefix}cluster:cleanup")


# 6. Submissions safe to retry.


def test_a_create_whose_answer_was_lost_is_a_503_naming_the_submission_id_to_retry_with(
    redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        redis_url=redis_url,
        key_prefix=f"flt-{uuid.uuid4().hex[:8]}:",
        artifact_dir=tmp_path,
        auth_disabled=True,
    )
    with TestClient(create_app(settings)) as api:
        store = api.app.state.services.store
        scripts = store.scripts

        async def reply_lost(name: str, *args: Any) -> Any:
            answer = await scripts(name, *args)
            if name == "create":  # Redis made the job; its answer never came back
                raise redis.exceptions.TimeoutError("Timeout reading from socket")
            return answer

        store.scripts = reply_lost
        lost = api.post("/v1/jobs", json=TRAIN)
        store.scripts = scripts
        assert lost.status_code == 503, lost.text
        assert int(lost.headers["Retry-After"]) > 0
        submission = lost.json()["error"]["details"]["submissionId"]
        again = api.post("/v1/jobs", json=TRAIN | {"submissionId": submission})
        assert again.status_code == 200, again.text
        jobs = api.get("/v1/jobs").json()["items"]
        assert [j["id"] for j in jobs] == [again.json()["id"]]


def test_the_client_retries_a_submission_with_one_submission_id() -> None:
    bodies: list[dict[str, Any]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if len(bodies) == 1:
            raise httpx.ReadTimeout("the answer was lost", request=request)
        if len(bodies) == 2:
            error = {"code": "unavailable", "message": "retry", "details": None}
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": error})
        return httpx.Response(201, json={"id": "job-0123456789abc"})

    client = GatewayClient("http://gateway", transport=httpx.MockTransport(gateway))
    assert client.submit_job(TRAIN) == {"id": "job-0123456789abc"}
    ids = {body.get("submissionId") for body in bodies}
    assert len(bodies) == 3 and len(ids) == 1 and ids.pop().startswith("cli-")
