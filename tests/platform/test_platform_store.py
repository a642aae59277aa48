"""The job store's scripts on a real Redis: transitions, leases, fencing, reaping, backoff."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from platform_harness import tiny_train

from vlarena.jobs.spec import JOB_SPEC_ADAPTER
from vlarena.jobs.states import TERMINAL_STATES, TRANSITIONS, JobState, can_transition
from vlarena.jobs.store import JobStore, connect
from vlarena.settings import Settings


def run_with_store(
    redis_url: str, test: Callable[[JobStore], Awaitable[None]], **settings: Any
) -> None:
    """Runs `test` against a store under a fresh key prefix."""

    async def main() -> None:
        config = Settings(
            redis_url=redis_url,
            key_prefix=f"vls-{uuid.uuid4().hex[:8]}:",
            lease_seconds=settings.pop("lease_seconds", 30),
            **settings,
        )
        redis = connect(config)
        try:
            await test(JobStore(redis, config))
        finally:
            await redis.aclose()

    asyncio.run(main())


def spec(**fields: Any) -> Any:
    return JOB_SPEC_ADAPTER.validate_python(tiny_train(**fields))


def test_terminal_states_are_final_and_transitions_are_checked() -> None:
    for state in TERMINAL_STATES:
        assert not TRANSITIONS[state]
    assert can_transition(JobState.QUEUED, JobState.RUNNING)
    assert not can_transition(JobState.QUEUED, JobState.SUCCEEDED)
    assert not can_transition(JobState.SUCCEEDED, JobState.RUNNING)
    assert not can_transition(JobState.CANCELLED, JobState.QUEUED)


def test_a_stale_attempt_is_fenced_off_once_the_reaper_requeued_its_job(redis_url: str) -> None:
    async def check(store: JobStore) -> None:
        job, _ = await store.create(spec(), owner="t")
        first = await store.claim("cpu", "w1")
        assert first is not None and first.attempt == 1
        await asyncio.sleep(0.3)  # the 0.2 s lease lapses: w1 looks dead
        assert await store.reap() == ["cpu"]
        second = await store.claim("cpu", "w2")
        assert second is not None and second.attempt == 2
        # w1 comes back: it can neither renew, write nor finish.
        assert await store.renew(first) == "FENCED"
        assert not await store.write(first, fields={"progress": "{}"})
        assert (await store.finish(first, "succeeded")).state == "FENCED"
        assert (await store.finish(second, "succeeded")).state == "SUCCEEDED"
        record = await store.get(job.id)
        assert record is not None and record.state == JobState.SUCCEEDED
        assert [a.outcome for a in record.attempts] == ["lost", "succeeded"]
        assert record.retries == 1

    run_with_store(redis_url, check, lease_seconds=0.2, retry_backoff_seconds=0)


def test_finished_jobs_ignore_late_cancels_and_claims(redis_url: str) -> None:
    async def check(store: JobStore) -> None:
        job, _ = await store.create(spec(), owner="t")
        claim = await store.claim("cpu", "w1")
        assert claim is not None
        await store.finish(claim, "succeeded")
        assert await store.cancel(job.id, requested_by="t") == JobState.SUCCEEDED
        assert await store.claim("cpu", "w2") is None
        assert await store.reap() == []

    run_with_store(redis_url, check)


def test_cancelling_a_queued_job_takes_it_off_the_queue(redis_url: str) -> None:
    async def check(store: JobStore) -> None:
        job, _ = await store.create(spec(), owner="t")
        assert await store.cancel(job.id, requested_by="t") == JobState.CANCELLED
        assert await store.waiting("cpu") == 0
        assert await store.claim("cpu", "w1") is None

    run_with_store(redis_url, check)


def test_a_running_job_cancelled_stops_at_its_next_renewal(redis_url: str) -> None:
    async def check(store: JobStore) -> None:
        job, _ = await store.create(spec(), owner="t")
        claim = await store.claim("cpu", "w1")
        assert claim is not None
        assert await store.cancel(job.id, requested_by="t") == JobState.CANCELLING
        assert await store.renew(claim) == "CANCELLING"
        assert (await store.finish(claim, "cancelled")).state == "CANCELLED"

    run_with_store(redis_url, check)


def test_a_failed_attempt_waits_out_its_backoff_before_it_runs_again(redis_url: str) -> None:
    async def check(store: JobStore) -> None:
        await store.create(spec(maxRetries=1), owner="t")
        claim = await store.claim("cpu", "w1")
        assert claim is not None
        finish = await store.finish(claim, "failed", message="boom")
        assert (finish.state, finish.wake_queue, finish.delay_seconds) == ("RETRYING", None, 0.2)
        assert await store.claim("cpu", "w1") is None
        await asyncio.sleep(0.3)
        assert await store.reap() == ["cpu"]
        retry = await store.claim("cpu", "w1")
        assert retry is not None and retry.attempt == 2
        last = await store.finish(retry, "failed", message="boom again")
        assert last.state == "FAILED"

    run_with_store(redis_url, check, retry_backoff_seconds=0.2)


def test_the_deadline_counts_from_the_first_start(redis_url: str) -> None:
    async def check(store: JobStore) -> None:
        await store.create(spec(activeDeadlineSeconds=1), owner="t")
        claim = await store.claim("cpu", "w1")
        assert claim is not None
        assert await store.renew(claim) == "RUNNING"
        await asyncio.sleep(1.05)
        assert await store.renew(claim) == "DEADLINE"
        assert (await store.finish(claim, "deadline")).state == "FAILED"

    run_with_store(redis_url, check)


def test_the_queue_runs_higher_priority_first_then_oldest_first(redis_url: str) -> None:
    async def check(store: JobStore) -> None:
        low, _ = await store.create(spec(priority=-5), owner="t")
        first, _ = await store.create(spec(), owner="t")
        second, _ = await store.create(spec(), owner="t")
        urgent, _ = await store.create(spec(priority=50), owner="t")
        order = []
        while claim := await store.claim("cpu", "w1"):
            order.append(claim.job_id)
        assert order == [urgent.id, first.id, second.id, low.id]

    run_with_store(redis_url, check)


def test_job_ids_sort_by_creation_time() -> None:
    from vlarena.jobs.store import new_job_id

    ids = []
    for _ in range(3):
        ids.append(new_job_id())
        time.sleep(0.002)
    assert ids == sorted(ids)


@pytest.mark.parametrize("outcome", ["preempted", "failed"])
def test_a_requeued_attempt_resumes_from_the_last_checkpoint(redis_url: str, outcome: str) -> None:
    async def check(store: JobStore) -> None:
        job, _ = await store.create(spec(), owner="t")
        claim = await store.claim("cpu", "w1")
        assert claim is not None
        checkpoint = '{"step": 7, "samplesSeen": 112, "attempt": 1}'
        assert await store.write(claim, fields={"checkpoint": checkpoint})
        await store.finish(claim, outcome, message="x")
        again = await store.claim("cpu", "w2")
        assert again is not None
        record = await store.get(job.id)
        assert record is not None
        assert record.attempts[0].samples_seen == 112
        assert record.attempts[1].resumed_from_samples == 112
        assert record.retries == (0 if outcome == "preempted" else 1)

    run_with_store(redis_url, check, retry_backoff_seconds=0)


def test_a_read_of_an_unchanged_job_costs_redis_only_the_key_builders(redis_url: str) -> None:
    from vlarena.jobs.lua import script_source

    light, full = script_source("read_if_changed"), script_source("cancel")
    assert "ALLOWED" in full and "ALLOWED" not in light and len(light) < len(full) / 2

    async def check(store: JobStore) -> None:
        record, _ = await store.create(spec(), owner="me")
        fields = await store.fields(record.id)
        assert await store.fields_if_changed(record.id, fields["revision"]) is None
        assert await store.fields_if_changed(record.id, "0") == fields
        await store.cancel(record.id, requested_by="me")
        changed = await store.fields_if_changed(record.id, fields["revision"])
        assert changed is not None and changed["revision"] != fields["revision"]
        assert await store.fields_if_changed("job-00000000000000", "1") == {}

    run_with_store(redis_url, check)
