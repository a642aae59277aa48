"""Job lifecycle against real Redis, Celery workers and the ML core: success, cancel, crashes."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
from platform_harness import (
    LEASE_SECONDS,
    TERMINAL,
    Gateway,
    WorkerPool,
    broken_job,
    failing_job,
    get_job,
    long_train,
    submit,
    wait_for,
    wait_for_state,
    worker_pid,
)


def _events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/events")
    assert response.status_code == 200
    return response.json()["items"]


def _wait_for_checkpoint(client: httpx.Client, job_id: str, samples: int) -> dict[str, Any]:
    def checkpointed() -> dict[str, Any] | None:
        job = get_job(client, job_id)
        checkpoint = job.get("checkpoint") or {}
        done = job["state"] == "RUNNING" and (checkpoint.get("samplesSeen") or 0) >= samples
        return job if done else None

    return wait_for(checkpointed, 60, f"a checkpoint of {job_id} past {samples} samples", 0.05)


def _with_attempts(client: httpx.Client, job_id: str, count: int) -> dict[str, Any] | None:
    job = get_job(client, job_id)
    return job if len(job["attempts"]) >= count else None


def test_train_job_succeeds_with_artifacts_and_a_registered_model(
    trained_job: dict[str, Any], gateway: Gateway
) -> None:
    job = trained_job["job"]
    assert job["state"] == "SUCCEEDED"
    assert job["progress"]["samplesSeen"] == job["progress"]["totalSamples"] == 320
    assert job["progress"]["percent"] == 100.0
    assert [a["outcome"] for a in job["attempts"]] == ["succeeded"]
    assert job["metrics"]["final"] and "caption_of_10" in job["metrics"]["values"]
    assert job["models"] == [{"name": "platform-test-model", "version": 1}]

    with gateway.client("reader") as client:
        artifacts = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
        paths = {item["path"] for item in artifacts["items"]}
        assert {"metrics.json", "run/model.pt", "run/result.json"} <= paths
        assert set(artifacts["declared"]) <= paths
        download = client.get(f"/v1/jobs/{job['id']}/artifacts/metrics.json")
        assert download.status_code == 200 and download.json()["families"]
        escape = client.get(f"/v1/jobs/{job['id']}/artifacts/..%2F..%2Fetc%2Fpasswd")
        assert escape.status_code == 404
        nul = client.get(f"/v1/jobs/{job['id']}/artifacts/metrics.json%00")
        assert nul.status_code == 404 and nul.json()["error"]["code"] == "not_found"

        versions = client.get("/v1/models/platform-test-model/versions").json()["items"]
        assert len(versions) == 1
        version = versions[0]
        assert (version["status"], version["sourceJob"]) == ("READY", job["id"])
        assert Path(version["path"]).is_file()
        assert version["metrics"] == job["metrics"]["values"]


def test_logs_stream_live_over_sse_and_persist(
    trained_job: dict[str, Any], gateway: Gateway
) -> None:
    stream = trained_job["stream"]
    assert stream[-1][0] == "end" and stream[-1][1]["state"] == "SUCCEEDED"
    progress = [(data, state) for kind, data, state in stream if data.get("source") == "job"]
    assert progress, "no training output arrived"
    # The first lines of training arrived while the job was still running.
    assert progress[0][1] == "RUNNING"
    ids = [data["id"] for kind, data, _ in stream if kind == "log"]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))

    # Kept after the fact, and resumable from any entry.
    with gateway.client("reader") as client:
        stored = client.get(f"/v1/jobs/{trained_job['job']['id']}/logs").json()["items"]
        assert [entry["id"] for entry in stored] == ids
        middle = ids[len(ids) // 2]
        rest = client.get(f"/v1/jobs/{trained_job['job']['id']}/logs", params={"after": middle})
        assert [entry["id"] for entry in rest.json()["items"]] == ids[ids.index(middle) + 1 :]


def test_cancel_stops_a_running_job_within_10_seconds(
    gateway: Gateway, workers: WorkerPool
) -> None:
    workers.ensure(2)
    with gateway.client("alice") as client:
        job = submit(client, long_train(20_000))
        wait_for_state(client, job["id"], {"RUNNING"}, 60)
        _wait_for_checkpoint(client, job["id"], 160)
        started = time.monotonic()
        answer = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert answer.status_code == 202 and answer.json()["state"] == "CANCELLING"
        done = wait_for_state(client, job["id"], TERMINAL, 10)
        assert done["state"] == "CANCELLED"
        assert time.monotonic() - started < 10
        assert done["attempts"][-1]["outcome"] == "cancelled"
        reasons = [e["reason"] for e in _events(client, job["id"])]
        assert reasons.index("CancelRequested") < reasons.index("Cancelled")
        again = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert again.status_code == 202 and again.json()["state"] == "CANCELLED"


def test_killed_worker_job_resumes_from_checkpoint_on_another_worker(
    gateway: Gateway, workers: WorkerPool
) -> None:
    workers.ensure(2)
    budget = 2400
    with gateway.client("alice") as client:
        job = submit(client, long_train(budget))
        running = _wait_for_checkpoint(client, job["id"], 160)
        victim = worker_pid(running)
        workers.signal(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        workers.wait(victim, 10)
        workers.spawn(1)  # a replacement boots meanwhile, as a Deployment would start one

        resumed = wait_for(
            lambda: _with_attempts(client, job["id"], 2), 60, "a second attempt", 0.1
        )
        assert time.monotonic() - killed_at < 60
        done = wait_for_state(client, job["id"], TERMINAL, 90)

    assert done["state"] == "SUCCEEDED", done
    first, second = done["attempts"]
    assert first["outcome"] == "lost" and second["outcome"] == "succeeded"
    assert [a["outcome"] for a in done["attempts"]].count("succeeded") == 1
    assert worker_pid({"worker": second["worker"]}) != victim
    # Resumed from the last checkpoint the lost attempt recorded, not from scratch...
    assert second["resumedFromSamples"] >= running["checkpoint"]["samplesSeen"] > 0
    assert resumed["attempts"][1]["resumedFromSamples"] == second["resumedFromSamples"]
    # ...and no sample was counted twice: the job saw exactly its budget.
    assert done["progress"]["samplesSeen"] == done["progress"]["totalSamples"] == budget
    with gateway.client("reader") as client:
        logs = client.get(f"/v1/jobs/{done['id']}/logs").json()["items"]
    assert any(e["attempt"] == 2 and "resumed from checkpoint" in e["message"] for e in logs), (
        "the second attempt did not resume from a checkpoint"
    )
    assert LEASE_SECONDS < 60


def test_sigterm_checkpoints_requeues_and_resumes(gateway: Gateway, workers: WorkerPool) -> None:
    workers.ensure(2)
    with gateway.client("alice") as client:
        job = submit(client, long_train(20_000))
        running = _wait_for_checkpoint(client, job["id"], 160)
        victim = worker_pid(running)
        workers.signal(victim, signal.SIGTERM)
        assert workers.wait(victim, 30) == 0, "the worker did not exit cleanly after SIGTERM"
        preempted = wait_for(
            lambda: _with_attempts(client, job["id"], 2), 30, "the job to resume", 0.1
        )
        first, second = preempted["attempts"]
        resumed = _wait_for_checkpoint(client, job["id"], second["resumedFromSamples"] + 16)
        reasons = [e["reason"] for e in _events(client, job["id"])]
        client.post(f"/v1/jobs/{job['id']}/cancel")
        wait_for_state(client, job["id"], TERMINAL, 30)

    assert first["outcome"] == "preempted" and "Preempted" in reasons
    assert preempted["retries"] == 0, "a preemption is not a failure"
    # The stop wrote a checkpoint at the step where it stopped; the next attempt began there
    # and trains on from it on another worker.
    assert second["resumedFromSamples"] == first["samplesSeen"] > 0
    assert worker_pid({"worker": second["worker"]}) != victim
    assert resumed["attempts"][1]["outcome"] == "running"


def test_higher_priority_job_runs_before_an_earlier_lower_priority_one(
    gateway: Gateway, workers: WorkerPool
) -> None:
    workers.ensure(1)
    with gateway.client("alice") as client:
        busy = submit(client, long_train(20_000))
        wait_for_state(client, busy["id"], {"RUNNING"}, 60)
        low = submit(client, failing_job(priority=0, maxRetries=0))
        high = submit(client, failing_job(priority=10, maxRetries=0))
        assert client.post(f"/v1/jobs/{busy['id']}/cancel").status_code == 202
        low_done = wait_for_state(client, low["id"], TERMINAL, 60)
        high_done = wait_for_state(client, high["id"], TERMINAL, 60)
    assert high_done["startedAt"] < low_done["startedAt"]


def test_failed_attempts_are_retried_up_to_max_retries(
    gateway: Gateway, workers: WorkerPool
) -> None:
    workers.ensure(1)
    with gateway.client("alice") as client:
        job = submit(client, broken_job(maxRetries=1))
        done = wait_for_state(client, job["id"], TERMINAL, 60)
        reasons = [e["reason"] for e in _events(client, job["id"])]
    assert done["state"] == "FAILED"
    assert [a["outcome"] for a in done["attempts"]] == ["failed", "failed"]
    assert done["retries"] == 1
    assert done["error"]["code"] == "JobFailed"
    assert done["error"]["message"].startswith("OSError")
    assert reasons.count("Retrying") == 1 and reasons[-1] == "Failed"


def test_a_job_that_fails_on_its_input_is_not_retried(
    gateway: Gateway, workers: WorkerPool
) -> None:
    workers.ensure(1)
    with gateway.client("alice") as client:
        job = submit(client, failing_job(maxRetries=3))
        done = wait_for_state(client, job["id"], TERMINAL, 60)
        reasons = [e["reason"] for e in _events(client, job["id"])]
    assert done["state"] == "FAILED" and done["retries"] == 0
    assert [a["outcome"] for a in done["attempts"]] == ["failed"]
    assert done["error"]["code"] == "InvalidInput"
    assert "manifest.jsonl" in done["error"]["message"] and "\n" not in done["error"]["message"]
    assert "Retrying" not in reasons and reasons[-1] == "InvalidInput"


def test_active_deadline_fails_a_job_that_runs_too_long(
    gateway: Gateway, workers: WorkerPool
) -> None:
    workers.ensure(1)
    with gateway.client("alice") as client:
        job = submit(client, long_train(20_000, activeDeadlineSeconds=2))
        done = wait_for_state(client, job["id"], TERMINAL, 60)
    assert done["state"] == "FAILED"
    assert done["error"]["code"] == "DeadlineExceeded"
