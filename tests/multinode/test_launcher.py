"""The Kubernetes launcher against a scripted API server: the calls it makes, the states it reports
for each pod-phase sequence, rank 0's log, cancellation and clean-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vlarena.events import as_dict
from vlarena.settings import Settings
from vlarena.worker.launcher import (
    ClusterJobFailed,
    ClusterJobStopped,
    ClusterUnavailable,
    run_on_cluster,
)

from .fake_kubernetes import FakeKubernetes, Step, condition, failed, pod, unschedulable

JOB_ID, ATTEMPT = "job-0190abc1234def567", 1
NAME = f"{JOB_ID}-{ATTEMPT}"
NAMESPACE = "ml-training"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
SPEC: dict[str, Any] = {
    "type": "train",
    "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
    "dataset": {"name": "fashion-grid"},
    "budget": {"steps": 5},
    "resources": {"nodes": 2, "gpus": 4, "cpu": 8, "memory": "32Gi"},
    "activeDeadlineSeconds": 7200,
}
RANK0_LOG = "\n".join(
    [
        "W0101 torchrun: starting 4 processes per node",
        json.dumps({"type": "progress", "step": 5, "samplesSeen": 80, "totalSamples": 80}),
        json.dumps(
            {
                "type": "artifact",
                "kind": "checkpoint",
                "step": 5,
                "samplesSeen": 80,
                "path": "run/c.pt",
            }
        ),
        "{not json",
    ]
)


@pytest.fixture(autouse=True)
def _outside_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBERNETES_SERVICE_HOST", "POD_NAMESPACE", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)


def settings_for(fake: FakeKubernetes, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "artifact_dir": tmp_path / "artifacts",
        "kubernetes_enabled": True,
        "kubernetes_image": "ghcr.io/vlarena/vlarena-worker:1.0-cuda",
        "kubernetes_kubeconfig": fake.kubeconfig(tmp_path),
        "kubernetes_artifacts_claim": "arena-vlarena-artifacts",
        "kubernetes_watch_seconds": 1,
        "kubernetes_partial_scheduling_seconds": 0.5,
    }
    return Settings(**(values | overrides))


def launch(
    fake: FakeKubernetes, tmp_path: Path, should_stop: Any = None, **overrides: Any
) -> tuple[dict[str, Any] | Exception, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    workdir = tmp_path / "artifacts" / "jobs" / JOB_ID / f"attempt-{ATTEMPT}"
    workdir.mkdir(parents=True)
    # What the pods leave on the shared volume when they finish.
    (workdir / "job-result.json").write_text(json.dumps({"metrics": {"loss": 1.5}}))
    try:
        result: dict[str, Any] | Exception = run_on_cluster(
            settings_for(fake, tmp_path, **overrides),
            JOB_ID,
            ATTEMPT,
            SPEC,
            workdir,
            # What the worker records: typed events in their wire shape, dicts as they are.
            on_event=lambda e: events.append(e if isinstance(e, dict) else as_dict(e)),
            should_stop=should_stop or (lambda: False),
        )
    except Exception as exc:
        result = exc
    return result, events


def states(events: list[dict[str, Any]]) -> list[str]:
    seen = [e["state"] for e in events if e["type"] == "cluster"]
    return [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]


def test_success_creates_the_job_and_service_follows_rank_zero_and_cleans_up(tmp_path):
    script = [
        Step([unschedulable(NAME, 0), unschedulable(NAME, 1)], {"active": 2}),
        Step([pod(NAME, 0, "Running"), pod(NAME, 1, "Pending")], {"active": 2}),
        Step([pod(NAME, 0, "Running"), pod(NAME, 1, "Running")], {"active": 2}),
        Step(
            [pod(NAME, 0, "Succeeded"), pod(NAME, 1, "Succeeded")],
            {"succeeded": 2, **condition("Complete")},
        ),
    ]
    rank0 = pod(NAME, 0, "Running")["metadata"]["name"]
    with FakeKubernetes(script, logs={rank0: RANK0_LOG}) as fake:
        result, events = launch(fake, tmp_path)

    assert result == {"metrics": {"loss": 1.5}}
    assert states(events) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    queued = next(e for e in events if e["type"] == "cluster")
    assert "0 of 2 pods placed" in queued["message"] and "Insufficient" in queued["message"]
    # Rank 0's JSON lines are the trainer's events; other lines are log lines.
    assert {"type": "progress", "step": 5, "samplesSeen": 80, "totalSamples": 80} in events
    assert any(e["type"] == "artifact" and e["kind"] == "checkpoint" for e in events)
    messages = [e["message"] for e in events if e["type"] == "log"]
    assert "[rank 0] W0101 torchrun: starting 4 processes per node" in messages
    assert "[rank 0] {not json" in messages

    calls = fake.calls
    assert (calls[0].method, calls[0].path) == ("POST", JOBS)
    job = calls[0].body
    assert job["kind"] == "Job" and job["metadata"]["name"] == NAME
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 2
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert (calls[1].method, calls[1].path) == ("POST", SERVICES)
    service = calls[1].body
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0] == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": NAME,
        "uid": f"uid-{NAME}",
    }
    watches = [c for c in calls if c.path == PODS]
    assert watches and all(c.query["watch"] == "true" for c in watches)
    assert {c.query["labelSelector"] for c in watches} == {f"vlarena.dev/cluster-job={NAME}"}
    assert all(c.query["timeoutSeconds"] == "1" for c in watches)
    logs = [c for c in calls if c.path.endswith("/log")]
    assert [c.path for c in logs] == [f"{PODS}/{rank0}/log"]
    assert logs[0].query["follow"] == "true" and logs[0].query["container"] == "trainer"
    assert ("GET", f"{JOBS}/{NAME}") in [(c.method, c.path) for c in calls]
    delete = calls[-1]
    assert (delete.method, delete.path) == ("DELETE", f"{JOBS}/{NAME}")
    assert delete.body["propagationPolicy"] == "Foreground"
    assert NAME not in fake.jobs


def test_a_pod_failure_within_the_backoff_is_retrying_then_running_again(tmp_path):
    script = [
        Step([pod(NAME, 0, "Running"), pod(NAME, 1, "Running")], {"active": 2}),
        Step([pod(NAME, 0, "Running"), failed(NAME, 1)], {"active": 1, "failed": 1}),
        Step(
            [pod(NAME, 0, "Running"), failed(NAME, 1), pod(NAME, 1, "Pending", attempt=1)],
            {"active": 2, "failed": 1},
        ),
        Step(
            [pod(NAME, 0, "Running"), failed(NAME, 1), pod(NAME, 1, "Running", attempt=1)],
            {"active": 2, "failed": 1},
        ),
        Step(
            [pod(NAME, 0, "Succeeded"), failed(NAME, 1), pod(NAME, 1, "Succeeded", attempt=1)],
            {"succeeded": 2, "failed": 1, **condition("Complete")},
        ),
    ]
    with FakeKubernetes(script) as fake:
        result, events = launch(fake, tmp_path)
    assert result == {"metrics": {"loss": 1.5}}
    assert states(events) == ["RUNNING", "RETRYING", "RUNNING", "SUCCEEDED"]
    retrying = next(e for e in events if e.get("state") == "RETRYING")
    assert retrying["reason"] == "PodFailed"
    assert "1 pod failure(s) of 4 allowed" in retrying["message"]  # backoffLimit 2 × 2 nodes
    assert "OOMKilled, exit code 137" in retrying["message"]
    assert fake.calls[0].body["spec"]["backoffLimit"] == 4


def test_a_pod_failure_past_the_backoff_fails_with_the_reason(tmp_path):
    script = [
        Step([pod(NAME, 0, "Running"), pod(NAME, 1, "Running")], {"active": 2}),
        Step(
            [pod(NAME, 0, "Running"), failed(NAME, 1)],
            {
                "failed": 5,
                **condition(
                    "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                ),
            },
        ),
    ]
    with FakeKubernetes(script) as fake:
        result, events = launch(fake, tmp_path)
    assert isinstance(result, ClusterJobFailed)
    assert "BackoffLimitExceeded" in str(result) and "OOMKilled" in str(result)
    assert states(events) == ["RUNNING", "FAILED"]
    assert fake.verbs()[-1] == ("DELETE", f"{JOBS}/{NAME}", "")
    assert NAME not in fake.jobs


def test_pods_left_partially_scheduled_fail_the_attempt_instead_of_hanging(tmp_path):
    script = [
        Step([pod(NAME, 0, "Running"), unschedulable(NAME, 1)], {"active": 2}),
    ]
    with FakeKubernetes(script) as fake:
        result, events = launch(fake, tmp_path)
    assert isinstance(result, ClusterJobFailed)
    assert "stayed partially scheduled for 0 s" in str(result)  # the deadline of 0.5 s
    assert "1 of 2 pods placed" in str(result) and "Insufficient nvidia.com/gpu" in str(result)
    assert states(events) == ["QUEUED", "FAILED"]
    failure = next(e for e in events if e.get("state") == "FAILED")
    assert failure["reason"] == "Unschedulable"
    assert fake.verbs()[-1] == ("DELETE", f"{JOBS}/{NAME}", "")


def test_pods_that_all_wait_stay_queued_without_the_partial_deadline(tmp_path):
    script = [Step([unschedulable(NAME, 0), unschedulable(NAME, 1)], {"active": 2})]
    polls = iter(range(30))
    with FakeKubernetes(script) as fake:
        result, events = launch(fake, tmp_path, should_stop=lambda: next(polls, None) is None)
    # Stopped by the test, not failed by the deadline: nothing was placed, so nothing is held.
    assert isinstance(result, ClusterJobStopped)
    assert states(events) == ["QUEUED"]


def test_cancel_deletes_the_job_with_propagation(tmp_path):
    script = [
        Step([pod(NAME, 0, "Running"), pod(NAME, 1, "Running")], {"active": 2}),
    ]
    with FakeKubernetes(script) as fake:

        def cancelled() -> bool:
            return any(c.method == "GET" and c.path == f"{JOBS}/{NAME}" for c in fake.calls)

        result, events = launch(fake, tmp_path, should_stop=cancelled)
    assert isinstance(result, ClusterJobStopped)
    assert states(events) == ["RUNNING"]
    deletes = [c for c in fake.calls if c.method == "DELETE"]
    assert [(c.path, c.body) for c in deletes] == [
        (f"{JOBS}/{NAME}", {"propagationPolicy": "Foreground"})
    ]
    assert fake.jobs == {}


def test_a_later_attempt_deletes_what_an_earlier_one_left_running(tmp_path):
    script = [
        Step(
            [pod(f"{JOB_ID}-2", 0, "Succeeded"), pod(f"{JOB_ID}-2", 1, "Succeeded")],
            {"succeeded": 2, **condition("Complete")},
        )
    ]
    with FakeKubernetes(script) as fake:
        fake.jobs[NAME] = {"metadata": {"name": NAME}}  # attempt 1's Job, still there
        workdir = tmp_path / "attempt-2"
        workdir.mkdir()
        (workdir / "job-result.json").write_text("{}")
        events: list[dict[str, Any]] = []
        run_on_cluster(
            settings_for(fake, tmp_path),
            JOB_ID,
            2,
            SPEC,
            workdir,
            on_event=events.append,
            should_stop=lambda: False,
        )
    assert fake.verbs()[0] == ("DELETE", f"{JOBS}/{NAME}", "")
    assert fake.verbs()[1] == ("POST", JOBS, "")
    assert json.loads((workdir / "spec.json").read_text()) == SPEC


def test_a_worker_without_kubernetes_refuses_with_a_clear_error(tmp_path):
    with pytest.raises(ClusterUnavailable, match="VLARENA_KUBERNETES_ENABLED=true"):
        run_on_cluster(
            Settings(artifact_dir=tmp_path),
            JOB_ID,
            1,
            SPEC,
            tmp_path,
            on_event=lambda _e: None,
            should_stop=lambda: False,
        )
    with pytest.raises(ClusterUnavailable, match="VLARENA_KUBERNETES_IMAGE"):
        run_on_cluster(
            Settings(artifact_dir=tmp_path, kubernetes_enabled=True),
            JOB_ID,
            1,
            SPEC,
            tmp_path,
            on_event=lambda _e: None,
            should_stop=lambda: False,
        )


def rbac_needs(calls: list[Any]) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) that each recorded call needs, as Kubernetes authorises it."""
    needs = set()
    for call in calls:
        parts = call.path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        tail = parts[parts.index("namespaces") + 2 :]
        resource = tail[0] + ("/" + tail[2] if len(tail) > 2 else "")
        if call.method == "POST":
            verb = "create"
        elif call.method == "DELETE":
            verb = "delete"
        elif len(tail) > 1:
            verb = "get"
        else:
            verb = "watch" if call.query.get("watch") == "true" else "list"
        needs.add((group, resource, verb))
    return needs


def test_the_chart_role_allows_exactly_the_calls_the_launcher_makes(tmp_path):
    from deploy.rendering import full, named, render

    script = [
        Step([pod(NAME, 0, "Running"), pod(NAME, 1, "Running")], {"active": 2}),
        Step(
            [pod(NAME, 0, "Succeeded"), pod(NAME, 1, "Succeeded")],
            {"succeeded": 2, **condition("Complete")},
        ),
    ]
    rank0 = pod(NAME, 0, "Running")["metadata"]["name"]
    with FakeKubernetes(script, logs={rank0: RANK0_LOG}) as fake:
        result, _ = launch(fake, tmp_path)
    assert result == {"metrics": {"loss": 1.5}}
    role = named(render(), "Role", full("worker"))
    allowed = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert rbac_needs(fake.calls) == allowed
