"""Helpers of the platform tests: processes of the test platform, job specs, waiting."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

KEYS = {
    "reader": ("reader-key-0123456789", ["read"]),
    "alice": ("alice-key-0123456789a", ["submit"]),
    "bob": ("bob-key-0123456789abcd", ["submit"]),
    "root": ("root-key-0123456789abc", ["admin"]),
}
LEASE_SECONDS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Polls `predicate` until it returns something truthy; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Gateway:
    """`python -m vlarena.gateway` with two uvicorn processes on a free port."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env | {"VLARENA_GATEWAY_PORT": str(self.port), "VLARENA_GATEWAY_WORKERS": "2"}
        self.logs = logs
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vlarena.gateway"],
            env=self.env,
            stdout=(self.logs / f"gateway-{self.starts}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            return False

        wait_for(ready, 30, "the gateway to be ready")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, who: str | None = "alice") -> httpx.Client:
        headers = {"Authorization": f"Bearer {KEYS[who][0]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


class WorkerPool:
    """Worker processes (`python -m vlarena.worker`), started, stopped and killed by the tests."""

    def __init__(self, env: dict[str, str], logs: Path, store: redis.Redis) -> None:
        self.env = env
        self.logs = logs
        self.store = store
        self.processes: dict[int, subprocess.Popen] = {}
        self.started = 0

    def alive(self) -> list[int]:
        return [pid for pid, p in self.processes.items() if p.poll() is None]

    def _registered(self, pid: int) -> bool:
        workers = self.store.zrange(f"{self.env['VLARENA_KEY_PREFIX']}workers", 0, -1)
        return any(w.endswith(f":{pid}") for w in workers)

    def spawn(self, count: int) -> list[int]:
        """Starts workers without waiting for them (they boot while other tests run)."""
        new = []
        for _ in range(count):
            self.started += 1
            process = subprocess.Popen(
                [sys.executable, "-m", "vlarena.worker"],
                env=self.env,
                stdout=(self.logs / f"worker-{self.started}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            self.processes[process.pid] = process
            new.append(process.pid)
        return new

    def ensure(self, count: int) -> list[int]:
        """Exactly `count` live workers, each registered (ready for jobs)."""
        alive = self.alive()
        for pid in alive[count:]:
            self.stop(pid)
        if len(alive) < count:
            self.spawn(count - len(alive))
        for pid in self.alive():
            wait_for(lambda pid=pid: self._registered(pid), 60, f"worker {pid} to register")
        return self.alive()

    def stop(self, pid: int) -> int:
        process = self.processes[pid]
        stop(process)
        return process.returncode

    def signal(self, pid: int, sig: signal.Signals) -> None:
        os.kill(pid, sig)

    def wait(self, pid: int, timeout: float) -> int:
        return self.processes[pid].wait(timeout)

    def close(self) -> None:
        for pid in self.alive():
            self.stop(pid)


def tiny_train(samples: int = 320, **fields: Any) -> dict[str, Any]:
    """A train job of the tiny token VLM on 64 fashion-grid images: seconds on a CPU."""
    spec: dict[str, Any] = {
        "type": "train",
        "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
        "dataset": {"name": "fashion-grid", "options": {"n_train": 64, "n_val": 16, "n_test": 32}},
        "budget": {"samples": samples},
        "hyperparameters": {"batchSize": 16, "checkpointEverySteps": 10, "logEverySteps": 5},
        "evaluation": {
            "curvePoints": 0,
            "maxImages": 16,
            "generateImages": 4,
            "latencyRepeats": 0,
            "retrievalPools": [8],
        },
    }
    spec.update(fields)
    return spec


def long_train(samples: int = 6400, **fields: Any) -> dict[str, Any]:
    """A tiny train job with a budget that keeps it running for several seconds."""
    return tiny_train(samples, **fields)


# A data root of the test platform (VLARENA_DATA_ROOTS): where broken_job's runs are made.
DATA_ROOT = tempfile.gettempdir()


def failing_job(**fields: Any) -> dict[str, Any]:
    """A job that fails at once on its input: its manifest, under a data root, does not exist."""
    missing = f"{DATA_ROOT}/vlarena-test-nonexistent/manifest.jsonl"
    return tiny_train(dataset={"uri": missing}, **fields)


def broken_job(**fields: Any) -> dict[str, Any]:
    """A job that fails at once, and not on its input: the model file it evaluates is torn
    (half written, as a crashed copy on shared storage leaves it), which a later attempt may
    find whole."""
    import torch

    run = Path(tempfile.mkdtemp(prefix="vlarena-torn-run-"))
    model = run / "model.pt"
    torch.save({"family": "token-vlm", "state_dict": {"w": torch.zeros(10_000)}}, model)
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    return {"type": "evaluate", "source": {"runDir": str(run)}, **fields}


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def submit(client: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_state(
    client: httpx.Client, job_id: str, states: set[str], timeout: float
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = get_job(client, job_id)
        return job if job["state"] in states else None

    return wait_for(reached, timeout, f"job {job_id} to reach {sorted(states)}", interval=0.2)


TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def worker_pid(job: dict[str, Any]) -> int:
    """The pid of the worker running a job's current attempt (`host:pid`)."""
    return int(job["worker"].rsplit(":", 1)[1])
