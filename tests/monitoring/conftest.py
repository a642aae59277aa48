"""A scraped platform: redis-server, a worker, the gateway (two uvicorn processes), Triton and
triton-sync as real processes on free ports, and a real Prometheus scraping them every second
with vlarena's rules loaded, through one short train job and a few inference requests."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import yaml
from PIL import Image

# The platform tests' process helpers (gateway, workers, waiting).
sys.path.insert(0, str(Path(__file__).parents[1] / "platform"))
from platform_harness import (
    KEYS,
    Gateway,
    WorkerPool,
    free_port,
    stop,
    submit,
    tiny_train,
    wait_for,
    wait_for_state,
)
from scraped_platform import MODEL, ScrapedPlatform

from vlarena.monitoring.prometheus import (
    GATEWAY_JOB,
    TRITON_JOB,
    WORKER_JOB,
    local_config,
    prometheus_command,
)
from vlarena.serving.triton import LocalTriton

RULES = Path(__file__).parents[2] / "monitoring" / "rules" / "vlarena.yml"
# Few images: the job's export calibrates INT8 on the training split.
TINY_DATA = {"name": "fashion-grid", "options": {"n_train": 16, "n_val": 8, "n_test": 8}}


def _png() -> str:
    pixels = (np.arange(64 * 64 * 3).reshape(64, 64, 3) % 251).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _start_prometheus(directory: Path, targets: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = local_config(
        targets[GATEWAY_JOB],
        targets[WORKER_JOB],
        targets[TRITON_JOB],
        rule_files=[str(RULES)],
        interval="1s",
    )
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        prometheus_command(directory / "prometheus.yml", directory / "data", port),
        stdout=(directory / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    return process, f"http://127.0.0.1:{port}"


def _scraped_everything(prometheus: str) -> bool:
    try:
        response = httpx.get(f"{prometheus}/api/v1/targets", timeout=2)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:  # still starting
        return False
    targets = response.json()["data"]["activeTargets"]
    return len(targets) == 3 and all(t["health"] == "up" for t in targets)


@pytest.fixture(scope="session")
def scraped_platform(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScrapedPlatform]:
    root = tmp_path_factory.mktemp("scraped")
    logs = root / "logs"
    logs.mkdir()
    worker_metrics = free_port()
    keys = [{"name": name, "key": key, "scopes": scopes} for name, (key, scopes) in KEYS.items()]
    env = {
        **os.environ,
        "VLARENA_REDIS_URL": redis_url,
        "VLARENA_KEY_PREFIX": f"vlm-{uuid.uuid4().hex[:8]}:",
        "VLARENA_ARTIFACT_DIR": str(root / "artifacts"),
        "VLARENA_API_KEYS": json.dumps(keys),
        "VLARENA_WORKER_QUEUES": "cpu",
        "VLARENA_WORKER_METRICS_PORT": str(worker_metrics),
        "VLARENA_HEARTBEAT_SECONDS": "0.5",
        # One torch thread: the worker shares two cores with everything else here, and
        # oversubscribed threads slow training many times over.
        "VLARENA_NUM_THREADS": "1",
        "VLARENA_GATEWAY_ACCESS_LOG": "false",
        "PYTHONUNBUFFERED": "1",
    }
    started = time.time()
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    workers = WorkerPool(env, logs, store)
    workers.spawn(1)
    triton = LocalTriton(root / "triton" / "repository", workdir=root / "triton")
    env["VLARENA_TRITON_URL"] = triton.grpc_url
    gateway = Gateway(env, logs)
    processes: list[subprocess.Popen] = []
    try:
        gateway.start()
        triton.start()
        prometheus, url = _start_prometheus(
            root,
            {
                GATEWAY_JOB: f"127.0.0.1:{gateway.port}",
                WORKER_JOB: f"127.0.0.1:{worker_metrics}",
                TRITON_JOB: f"127.0.0.1:{triton.metrics_port}",
            },
        )
        processes.append(prometheus)
        workers.ensure(1)
        wait_for(lambda: _scraped_everything(url), 30, "Prometheus to scrape all three targets")

        with gateway.client("alice") as alice, gateway.client("root") as admin:
            job = submit(alice, tiny_train(640, modelName=MODEL, dataset=TINY_DATA))
            done = wait_for_state(alice, job["id"], {"SUCCEEDED", "FAILED"}, 150)
            assert done["state"] == "SUCCEEDED", done.get("error")
            version = done["models"][0]["version"]
            answer = admin.post(
                f"/v1/models/{MODEL}/aliases", json={"alias": "production", "version": version}
            )
            assert answer.status_code == 200, answer.text
            caption = {"model": MODEL, "images": [_png()], "maxLength": 4}
            # Not on Triton yet: a 503 that the gateway counts as a Triton error.
            statuses = [admin.post("/v1/caption", json=caption).status_code]
            sync = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "vlarena.cli",
                    "triton-sync",
                    "--once",
                    "--repository",
                    str(triton.repository),
                    "--triton-url",
                    triton.grpc_url,
                ],
                env=env,
                capture_output=True,
                timeout=120,
            )
            assert sync.returncode == 0, sync.stderr.decode()[-2000:]
            statuses += [admin.post("/v1/caption", json=caption).status_code for _ in range(3)]
        # Three scrapes and rule evaluations after the last request.
        time.sleep(3.5)
        yield ScrapedPlatform(url, started, done, logs, statuses)
    finally:
        for process in processes:
            stop(process)
        gateway.stop()
        workers.close()
        triton.stop()
        store.close()
