"""State that stays bounded: finished jobs expire from Redis after their retention (their index
entries with them), and a full or unreachable Redis is a 503 with Retry-After, never a 500."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from live_server import live_server
from vlarena.client.api import parse_sse
from vlarena.gateway.app import create_app
from vlarena.jobs.spec import JOB_SPEC_ADAPTER
from vlarena.jobs.states import JobState
from vlarena.jobs.store import JobStore, connect
from vlarena.jobs.streams import JobStreams
from vlarena.rundirs import AttemptsDir
from vlarena.settings import Settings
from vlarena.worker.execution import JobExecution

TRAIN = {
    "type": "train",
    "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
    "dataset": {"name": "fashion-grid"},
    "budget": {"samples": 64},
}


def spec(**fields: Any) -> Any:
    return JOB_SPEC_ADAPTER.validate_python(TRAIN | fields)


def run_with_store(
    redis_url: str, test: Callable[[JobStore], Awaitable[None]], **settings: Any
) -> None:
    async def main() -> None:
        config = Settings(
            redis_url=redis_url, key_prefix=f"bnd-{uuid.uuid4().hex[:8]}:", **settings
        )
        redis = connect(config)
        try:
            await test(JobStore(redis, config))
        finally:
            await redis.aclose()

    asyncio.run(main())


async def job_keys(store: JobStore, job_id: str, submission: str) -> dict[str, int]:
    """Milliseconds each of the job's keys has left (-1: no expiry, -2: gone)."""
    keys = store.keys
    names = {
        "record": keys.job(job_id),
        "logs": keys.job_logs(job_id),
        "events": keys.job_events(job_id),
        "submission": keys.submission("t", submission),
    }
    return {name: await store.redis.pttl(key) for name, key in names.items()}


def test_a_finished_job_expires_with_its_logs_events_and_submission(redis_url: str) -> None:
    async def check(store: JobStore) -> None:
        failed, _ = await store.create(spec(submissionId="s-failed", maxRetries=0), owner="t")
        claim = await store.claim("cpu", "w1")
        assert claim is not None and claim.job_id == failed.id
        running, _ = await store.create(spec(submissionId="s-running"), owner="t")
        assert await store.claim("cpu", "w2") is not None
        cancelled, _ = await store.create(spec(submissionId="s-cancelled"), owner="t")
        assert set((await job_keys(store, failed.id, "s-failed")).values()) == {-1}
        assert (await store.finish(claim, "failed", message="boom")).state == "FAILED"
        assert await store.cancel(cancelled.id, requested_by="t") == JobState.CANCELLED
        for job, submission in ((failed, "s-failed"), (cancelled, "s-cancelled")):
            left = await job_keys(store, job.id, submission)
            assert all(0 < ms <= 1000 for ms in left.values()), left
        # A job still running keeps everything.
        assert set((await job_keys(store, running.id, "s-running")).values()) == {-1}

        await asyncio.sleep(1.1)
        assert set((await job_keys(store, failed.id, "s-failed")).values()) == {-2}
        items, _ = await store.list_jobs()
        assert [j.id for j in items] == [running.id]
        for state in (None, JobState.FAILED, JobState.CANCELLED):
            assert await store.redis.zrange(store.keys.jobs_index(state), 0, -1) in (
                [running.id],
                [],
            )
        assert await store.redis.zcard(store.keys.jobs_expiring()) == 0
        # The submission id is free again once its job is forgotten.
        _, created = await store.create(spec(submissionId="s-failed"), owner="t")
        assert created

    run_with_store(redis_url, check, job_retention_seconds=1)


def test_the_reaper_drops_expired_jobs_from_the_indexes(redis_url: str) -> None:
    async def check(store: JobStore) -> None:
        job, _ = await store.create(spec(), owner="t")
        await store.cancel(job.id, requested_by="t")
        await asyncio.sleep(1.1)
        await store.reap()
        assert await store.redis.zcard(store.keys.jobs_index()) == 0
        counts = await store.counts()
        assert sum(counts["jobs"].values()) == 0

    run_with_store(redis_url, check, job_retention_seconds=1)


def test_a_retention_of_zero_keeps_finished_jobs(redis_url: str) -> None:
    async def check(store: JobStore) -> None:
        job, _ = await store.create(spec(submissionId="s"), owner="t")
        await store.cancel(job.id, requested_by="t")
        assert set((await job_keys(store, job.id, "s")).values()) == {-1}
        assert await store.redis.zcard(store.keys.jobs_expiring()) == 0

    run_with_store(redis_url, check, job_retention_seconds=0)


@contextlib.contextmanager
def filled(url: str) -> Iterator[None]:
    """Writes until Redis refuses (used memory past `maxmemory` under `noeviction`), then lowers
    `maxmemory` well below what is used, so that keys expiring meanwhile (rate-limit windows,
    retention) cannot bring Redis back under its limit while the test runs."""
    with redis.Redis.from_url(url) as client:
        limit = client.config_get("maxmemory")["maxmemory"]
        # Smaller and smaller values, so that what is left below `maxmemory` is less than any
        # command's own arguments.
        for size in (64 * 1024, 1024, 64):
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                for i in range(100_000):
                    client.set(f"ballast:{size}:{i}", b"x" * size)
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used // 2)
        try:
            yield
        finally:
            client.config_set("maxmemory", limit)
            for key in client.scan_iter("ballast:*", count=1000):
                client.delete(key)


def test_a_full_redis_answers_503_with_retry_after_never_500(
    small_redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        redis_url=small_redis_url,
        key_prefix="full:",
        artifact_dir=tmp_path,
        auth_disabled=True,
        job_retention_seconds=1,
    )
    with TestClient(create_app(settings)) as api:
        job = api.post("/v1/jobs", json=TRAIN)
        assert job.status_code == 201, job.text
        with filled(small_redis_url):
            for answer in (
                api.post("/v1/jobs", json=TRAIN),
                api.post(f"/v1/jobs/{job.json()['id']}/cancel"),
            ):
                assert answer.status_code == 503, answer.text
                assert int(answer.headers["Retry-After"]) > 0
                assert answer.json()["error"]["code"] == "unavailable"
            # Reads still work while writes are refused.
            assert api.get(f"/v1/jobs/{job.json()['id']}").status_code == 200
            assert api.get("/v1/jobs").status_code == 200


def test_an_unreachable_redis_answers_503_with_retry_after(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0", artifact_dir=tmp_path, auth_disabled=True
    )
    with TestClient(create_app(settings)) as api:
        for answer in (api.get("/v1/jobs/job-0123456789abc"), api.post("/v1/jobs", json=TRAIN)):
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"]
            assert answer.json()["error"]["code"] == "unavailable"


def serve(settings: Settings) -> contextlib.AbstractContextManager[str]:
    """The gateway under uvicorn in a thread (streams need a real server), at the URL yielded."""
    return live_server(create_app(settings), start_timeout=10)


def stream_settings(redis_url: str, tmp_path: Path, **fields: Any) -> Settings:
    return Settings(
        redis_url=redis_url,
        key_prefix=f"sse-{uuid.uuid4().hex[:8]}:",
        artifact_dir=tmp_path,
        auth_disabled=True,
        **fields,
    )


def test_followers_past_the_cap_get_503_and_never_starve_job_reads(
    redis_url: str, tmp_path: Path
) -> None:
    settings = stream_settings(redis_url, tmp_path, stream_max_followers=4)
    with serve(settings) as url, httpx.Client(base_url=url, timeout=10) as api:
        # No worker runs: the job stays QUEUED, as a GPU job does while no GPU worker is up.
        job_id = api.post("/v1/jobs", json=TRAIN).json()["id"]
        # Lines read from each open stream: dropping a line iterator would close its stream.
        lines: list[Iterator[str]] = []
        with contextlib.ExitStack() as open_streams:
            for i in range(8):
                response = open_streams.enter_context(
                    api.stream("GET", f"/v1/jobs/{job_id}/logs", params={"follow": "true"})
                )
                if i < 4:
                    assert response.status_code == 200
                    lines.append(response.iter_lines())
                    assert next(lines[-1])  # the stream has begun
                else:
                    response.read()
                    assert response.status_code == 503, response.text
                    assert int(response.headers["Retry-After"]) > 0
                    assert response.json()["error"]["code"] == "too_many_followers"
            for _ in range(20):
                assert api.get(f"/v1/jobs/{job_id}").status_code == 200
        # The slots are free again once their streams are closed.
        time.sleep(0.5)
        with api.stream("GET", f"/v1/jobs/{job_id}/logs", params={"follow": "true"}) as response:
            assert response.status_code == 200


def test_an_idle_stream_ends_and_resumes_from_last_event_id_losing_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    settings = stream_settings(redis_url, tmp_path, stream_idle_seconds=0.5)
    with serve(settings) as url, httpx.Client(base_url=url, timeout=10) as api:
        job_id = api.post("/v1/jobs", json=TRAIN).json()["id"]
        started = time.monotonic()
        with api.stream("GET", f"/v1/jobs/{job_id}/events", params={"follow": "true"}) as first:
            before = list(parse_sse(first.iter_lines()))
        assert time.monotonic() - started < 5
        assert [e.event for e in before] == ["event", "event"]  # Created, NoWorker; no `end`
        api.post(f"/v1/jobs/{job_id}/cancel")
        headers = {"Last-Event-ID": str(before[-1].id)}
        with api.stream(
            "GET", f"/v1/jobs/{job_id}/events", params={"follow": "true"}, headers=headers
        ) as second:
            after = list(parse_sse(second.iter_lines()))
        assert [e.data.get("reason") for e in after] == ["Cancelled", None]
        assert after[-1].event == "end" and after[-1].data == {"state": "CANCELLED"}
        everything = api.get(f"/v1/jobs/{job_id}/events").json()["items"]
        assert [e.id for e in before + after[:-1]] == [e["id"] for e in everything]


def test_a_busy_stream_ends_after_its_maximum_duration(redis_url: str) -> None:
    async def check(store: JobStore) -> None:
        await store.create(spec(), owner="t")
        claim = await store.claim("cpu", "w1")
        assert claim is not None
        streams = JobStreams(store.redis, store.keys, max_seconds=0.5, poll_seconds=0.05)
        done = asyncio.Event()

        async def chatter() -> None:
            while not done.is_set():
                await store.write(claim, logs=[("info", "step")])
                await asyncio.sleep(0.05)

        writer = asyncio.create_task(chatter())
        started = time.monotonic()
        received = [entry async for entry in streams.follow("logs", claim.job_id)]
        done.set()
        await writer
        assert 0.5 <= time.monotonic() - started < 2
        assert len(received) > 5

    run_with_store(redis_url, check)


class _Runtime:
    """What an attempt needs of its worker process: the store, on a loop of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.shutdown = threading.Event()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.store = self.call(self._store())

    async def _store(self) -> JobStore:
        return JobStore(connect(self.settings), self.settings)

    def call(self, coroutine: Any, timeout: float | None = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def wake(self, queue: str) -> None:
        pass

    def close(self) -> None:
        self.call(self.store.redis.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.mark.parametrize("end", ["failed", "cancelled"])
def test_a_job_that_ends_unsuccessfully_keeps_only_its_last_attempt(
    redis_url: str, tmp_path: Path, end: str
) -> None:
    settings = Settings(
        redis_url=redis_url,
        key_prefix=f"prune-{uuid.uuid4().hex[:8]}:",
        artifact_dir=tmp_path,
        retry_backoff_seconds=0,
    )
    runtime = _Runtime(settings)
    try:
        store = runtime.store
        job, _ = runtime.call(store.create(spec(maxRetries=1), owner="t"))
        attempts = AttemptsDir.of_job(tmp_path, job.id)
        for number in (1, 2):
            claim = runtime.call(store.claim("cpu", "w1"))
            assert claim is not None and claim.attempt == number
            execution = JobExecution(runtime, claim)
            execution.workdir = attempts.start(number)
            (execution.workdir / "log.txt").write_text(f"attempt {number}\n")
            if number == 2 and end == "cancelled":
                runtime.call(store.cancel(job.id, requested_by="t"))
                execution.stop_reason = "cancel"
            execution._finish("train", RuntimeError("boom"), {}, attempts)
            if number == 1:
                # Retrying: the next attempt starts from this one's copy.
                assert execution.job_state == "RETRYING"
                assert [n for n, _ in attempts.attempts()] == [1]
        assert execution.job_state == end.upper()
        assert [n for n, _ in attempts.attempts()] == [2]
        assert (attempts.attempt(2) / "log.txt").read_text() == "attempt 2\n"
    finally:
        runtime.close()
