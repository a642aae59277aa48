"""A multi-node job end to end on the platform: submitted through the gateway, claimed from the
cluster queue by a real worker with Kubernetes enabled, launched on the scripted API server,
its pods' state and rank 0's log reflected in the job record, its result read back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from vlarena.client.api import GatewayClient
from vlarena.demo import free_port, wait_until
from vlarena.gateway.auth import key_digest

from .fake_kubernetes import FakeKubernetes, Step, condition, pod, unschedulable

KEY = "multinode-admin-key-0123456789"
SPEC: dict[str, Any] = {
    "type": "train",
    "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
    "dataset": {"name": "fashion-grid"},
    "budget": {"steps": 5},
    "resources": {"nodes": 2, "gpus": 1},
    "maxRetries": 0,
}
RESULT = {"metrics": {"loss": 1.25}, "artifacts": ["job-result.json"], "models": []}


def write_result_where_the_pods_would(job: dict[str, Any]) -> None:
    """What the pods leave on the shared artifact volume: the job's result file in `--out`."""
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    out = Path(args[args.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "job-result.json").write_text(json.dumps(RESULT))


@pytest.fixture
def platform(redis_url: str, tmp_path: Path):
    processes: list[subprocess.Popen] = []

    def script_for(name: str) -> list[Step]:
        waiting = Step([unschedulable(name, 0), unschedulable(name, 1)], {"active": 2})
        running = Step([pod(name, 0, "Running"), pod(name, 1, "Running")], {"active": 2})
        done = Step(
            [pod(name, 0, "Succeeded"), pod(name, 1, "Succeeded")],
            {"succeeded": 2, **condition("Complete")},
        )
        return [waiting, waiting, running, running, done]

    # The Job's name holds the job id, unknown until submission: the script is set then.
    fake = FakeKubernetes([], on_job_created=write_result_where_the_pods_would)
    with fake:
        gateway_port = free_port()
        env = {
            **os.environ,
            "VLARENA_REDIS_URL": redis_url,
            "VLARENA_KEY_PREFIX": f"vlm-{uuid.uuid4().hex[:8]}:",
            "VLARENA_ARTIFACT_DIR": str(tmp_path / "artifacts"),
            "VLARENA_API_KEYS": json.dumps(
                [{"name": "ops", "sha256": key_digest(KEY), "scopes": ["admin"]}]
            ),
            "VLARENA_GATEWAY_PORT": str(gateway_port),
            "VLARENA_GATEWAY_WORKERS": "1",
            "VLARENA_WORKER_QUEUES": "cluster",
            "VLARENA_KUBERNETES_ENABLED": "true",
            "VLARENA_KUBERNETES_KUBECONFIG": str(fake.kubeconfig(tmp_path)),
            "VLARENA_KUBERNETES_IMAGE": "ghcr.io/vlarena/vlarena-worker:1.0-cuda",
            "VLARENA_KUBERNETES_WATCH_SECONDS": "1",
            "VLARENA_HEARTBEAT_SECONDS": "0.5",
            "VLARENA_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("KUBERNETES_SERVICE_HOST", "POD_NAMESPACE", "KUBECONFIG"):
            env.pop(name, None)
        for module in ("vlarena.gateway", "vlarena.worker"):
            log = (tmp_path / f"{module}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", module], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        url = f"http://127.0.0.1:{gateway_port}"
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=1).status_code == 200, 60, "gateway")
        with GatewayClient(url, KEY) as client:
            yield {"client": client, "fake": fake, "script_for": script_for, "logs": tmp_path}
        for process in processes:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def test_a_multi_node_job_runs_through_the_worker_and_the_launcher(platform) -> None:
    client: GatewayClient = platform["client"]
    fake: FakeKubernetes = platform["fake"]
    job = client.submit_job(SPEC)
    assert job["queue"] == "cluster"
    name = f"{job['id']}-1"
    fake.script = platform["script_for"](name)
    fake.logs = {pod(name, 0, "Running")["metadata"]["name"]: "rank 0 says hello\n"}
    lines = [
        e.data["message"]
        for e in client.follow(job["id"])
        if e.event != "end" and isinstance(e.data, dict) and "message" in e.data
    ]
    record = client.get_job(job["id"])
    assert record["state"] == "SUCCEEDED", (record, lines)
    assert record["cluster"]["state"] == "SUCCEEDED"
    assert record["metrics"]["values"] == {"loss": 1.25}
    assert "[rank 0] rank 0 says hello" in lines
    events = [e.get("message", "") for e in client.events(job["id"])["items"]]
    assert any("0 of 2 pods placed" in m for m in events + lines), (events, lines)
    calls = [(c.method, c.path.rsplit("/", 1)[-1]) for c in fake.calls]
    assert ("POST", "jobs") in calls and ("DELETE", name) in calls
