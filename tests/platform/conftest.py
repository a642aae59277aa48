"""A real platform for the tests: redis-server, Celery workers and the gateway as subprocesses.

Everything binds 127.0.0.1 on free ports and uses its own key prefix and artifact directory, so
a Redis already running on 6379 neither helps nor hurts.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from platform_harness import (
    DATA_ROOT,
    KEYS,
    LEASE_SECONDS,
    Gateway,
    WorkerPool,
    get_job,
    submit,
    tiny_train,
)

from vlarena.client.api import parse_sse


@pytest.fixture(scope="session")
def platform_env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The `VLARENA_*` environment every component of the test platform runs with."""
    keys = [{"name": name, "key": key, "scopes": scopes} for name, (key, scopes) in KEYS.items()]
    return {
        **os.environ,
        "VLARENA_REDIS_URL": redis_url,
        "VLARENA_KEY_PREFIX": f"vlt-{uuid.uuid4().hex[:8]}:",
        "VLARENA_ARTIFACT_DIR": str(tmp_path_factory.mktemp("artifacts")),
        "VLARENA_API_KEYS": json.dumps(keys),
        "VLARENA_DATA_ROOTS": json.dumps([DATA_ROOT]),
        "VLARENA_WORKER_QUEUES": "cpu",
        # One thread per worker: two workers share two cores, and oversubscribed torch threads
        # slow training a hundredfold.
        "VLARENA_NUM_THREADS": "1",
        "VLARENA_LEASE_SECONDS": str(LEASE_SECONDS),
        "VLARENA_HEARTBEAT_SECONDS": "0.5",
        "VLARENA_REAPER_INTERVAL_SECONDS": "0.5",
        "VLARENA_RETRY_BACKOFF_SECONDS": "0",
        "VLARENA_GATEWAY_ACCESS_LOG": "false",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def store_redis(platform_env: dict[str, str]) -> redis.Redis:
    """A plain client on the test Redis, to look at what the platform wrote."""
    return redis.Redis.from_url(platform_env["VLARENA_REDIS_URL"], decode_responses=True)


@pytest.fixture(scope="session")
def gateway(
    platform_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    server = Gateway(platform_env, tmp_path_factory.mktemp("gateway-logs"))
    server.start()
    yield server
    server.stop()


# Autouse: two workers boot (and import torch) while the first tests, which need none, run.
@pytest.fixture(scope="session", autouse=True)
def workers(
    platform_env: dict[str, str],
    store_redis: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerPool]:
    pool = WorkerPool(platform_env, tmp_path_factory.mktemp("worker-logs"), store_redis)
    pool.spawn(2)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def trained_job(gateway: Gateway, workers: WorkerPool) -> dict[str, Any]:
    """One tiny train job, submitted and followed live over SSE from the start.

    Returns the finished job and what the stream delivered: each entry with the job's state
    read right after the entry arrived.
    """
    workers.ensure(2)
    with gateway.client("alice") as client:
        job = submit(client, tiny_train(modelName="platform-test-model"))
        received: list[tuple[str, dict[str, Any], str]] = []
        with client.stream(
            "GET", f"/v1/jobs/{job['id']}/logs", params={"follow": "true"}, timeout=120
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in parse_sse(response.iter_lines()):
                state = get_job(client, job["id"])["state"]
                received.append((event.event, event.data, state))
                if event.event == "end":
                    break
        return {"job": get_job(client, job["id"]), "stream": received}
