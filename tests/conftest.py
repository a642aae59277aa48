"""Session-wide fixtures: an isolated cache, and one tiny compare run (both families) that the
model, evaluation and CLI tests share instead of training their own."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_servers import PrivateRedis, redis_server

TINY_DATA = {"name": "fashion-grid", "options": {"n_train": 192, "n_val": 32, "n_test": 64}}
TINY_EVAL = {
    "maxImages": 64,
    "generateImages": 32,
    "retrievalPools": [32],
    "latencyRepeats": 2,
    "curveImages": 32,
    "curvePoints": 2,
}
TINY_BATCH = 32


def tiny_spec(kind: str = "compare", **extra: Any) -> dict[str, Any]:
    """A job spec that trains tiny models for a few seconds."""
    spec: dict[str, Any] = {
        "type": kind,
        "model": {"config": {"preset": "tiny"}},
        "dataset": TINY_DATA,
        "hyperparameters": {"batchSize": TINY_BATCH, "warmupSteps": 10, "learningRate": 2e-3},
        "budget": {"samples": 8192},
        "evaluation": TINY_EVAL,
    }
    spec.update(extra)
    return spec


@pytest.fixture(scope="session", autouse=True)
def vlarena_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session (datasets, encoder graphs, features, text embeddings), set
    in the environment so subprocesses share it."""
    cache = tmp_path_factory.mktemp("vlarena-cache")
    previous = os.environ.get("VLARENA_CACHE_DIR")
    os.environ["VLARENA_CACHE_DIR"] = str(cache)
    os.environ.setdefault("VLARENA_NUM_THREADS", "2")
    yield cache
    if previous is None:
        os.environ.pop("VLARENA_CACHE_DIR", None)
    else:
        os.environ["VLARENA_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_compare(tmp_path_factory: pytest.TempPathFactory, vlarena_cache: Path) -> dict[str, Any]:
    """Both families trained once on tiny fashion-grid data through `run_job`, and exported
    for serving and reported as a compare job is."""
    from vlarena.experiments.jobs import run_job
    from vlarena.jobs.spec import parse_job_spec

    workdir = tmp_path_factory.mktemp("tiny-compare")
    events: list[Any] = []
    result = run_job(parse_job_spec(tiny_spec(seeds=1)), workdir, on_event=events.append)
    return {
        "workdir": workdir,
        "result": result,
        "events": events,
        "metrics": json.loads((workdir / "metrics.json").read_text()),
    }


@pytest.fixture(scope="session")
def tiny_models(tiny_compare: dict[str, Any]) -> dict[str, Any]:
    """The trained tiny models by family, loaded from their saved files."""
    from vlarena.models.registry import load_model

    return {
        m["family"]: load_model(tiny_compare["workdir"] / m["path"])
        for m in tiny_compare["result"]["models"]
    }


@pytest.fixture(scope="session")
def tiny_splits(vlarena_cache: Path):
    from vlarena.experiments.inputs import Splits, open_dataset
    from vlarena.jobs.spec import DatasetSpec

    return Splits.for_training(open_dataset(DatasetSpec.model_validate(TINY_DATA)))


@pytest.fixture(scope="session")
def tiny_test_visual(tiny_models, tiny_splits):
    """Cached X-encoder features of the tiny test split (both families share the encoder)."""
    from vlarena.events import ignore
    from vlarena.experiments.inputs import visual_inputs

    model = next(iter(tiny_models.values()))
    return visual_inputs(model, tiny_splits.test, tiny_splits.full, ignore)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    # Bounded and never evicting, as the chart runs it.
    directory = tmp_path_factory.mktemp("serving-redis")
    with redis_server(
        directory, "--maxmemory", "1gb", "--maxmemory-policy", "noeviction"
    ) as server:
        yield server.url


@pytest.fixture
def small_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of its own with a few MiB of `maxmemory` and `noeviction`, as the chart
    runs it: tests fill it to see what a full Redis does."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    directory = tmp_path_factory.mktemp("small-redis")
    with redis_server(
        directory, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction"
    ) as server:
        yield server.url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, which it may stall (`PrivateRedis.stall`)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    with redis_server(tmp_path) as server:
        yield server
