"""Fixtures of the image tests: the images built from this commit (or a skip that says why), the
chart rendered for a machine without GPUs, and its pods started once for the session.

`make test` never builds: these tests run only on images built from the current commit (a clean
working tree at HEAD, as their labels record) and skip otherwise. `make images-test` sets VLARENA_IMAGE_TESTS=require: then missing images fail
the tests, and images from another commit are tested anyway.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from deploy.rendering import NAMESPACE, ROOT, full, render

from .pods import Cluster, cluster

MODE = os.environ.get("VLARENA_IMAGE_TESTS", "auto")
LOCAL_VALUES = Path(__file__).with_name("local-values.yaml")
STARTUP_KEY = pytest.StashKey[dict[str, float]]()


def load_images_module() -> ModuleType:
    """services/images.py, the build's own description of the images."""
    spec = importlib.util.spec_from_file_location("vlarena_images", ROOT / "services" / "images.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


images_module = load_images_module()


def head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def why_not_testable() -> str | None:
    """Why the built images cannot be tested now; None when they can."""
    if shutil.which("podman") is None:
        return "podman is not installed: `make images` installs it and builds the images"
    if MODE != "require" and not images_module.REPORT.exists():
        # Images on this machine that another checkout built (their SBOMs and report lie there).
        return f"no images were built from this checkout ({images_module.REPORT} is missing)"
    for name in images_module.RUNTIME_STANDINS:
        tag = images_module.STANDIN_IMAGES[name].tag
        if images_module.inspect(tag) is None:
            return f"{tag} is not built: run `make images`"
    commit = head()
    for component in images_module.IMAGES:
        tag = images_module.chart_image(component)
        found = images_module.inspect(tag)
        if found is None:
            return f"{tag} is not built: run `make images`"
        labels = found.get("Labels") or {}
        built = labels.get(images_module.REVISION_LABEL, "")
        if MODE == "require":
            continue
        if built != commit:
            return (
                f"{tag} was built from {built[:12] or 'an unknown commit'}, not HEAD {commit[:12]}: "
                "`make images` rebuilds it, `make images-test` tests it as it is"
            )
        if labels.get(images_module.WORKTREE_LABEL) != "clean":
            return (
                f"{tag} was built from {commit[:12]} with uncommitted changes: "
                "`make images-test` tests it as it is"
            )
    return None


@pytest.fixture(scope="session")
def built_images() -> dict[str, str]:
    """{component: the tag the chart renders}, for images fit to test; skips (or, under
    `make images-test`, fails) with the reason otherwise."""
    reason = why_not_testable()
    if reason is not None:
        if MODE == "require":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return {c: images_module.chart_image(c) for c in images_module.IMAGES}


@pytest.fixture(scope="session")
def api_key() -> str:
    from vlarena.gateway.auth import new_api_key

    return new_api_key()


@pytest.fixture(scope="session")
def chart_objects(api_key: str) -> list[dict[str, Any]]:
    """The chart as these tests run it (local-values.yaml), with one admin key."""
    from vlarena.gateway.auth import key_digest

    entry = {
        "name": "image-tests",
        "sha256": key_digest(api_key),
        "scopes": ["read", "submit", "admin"],
    }
    return render([LOCAL_VALUES], set_json=[f"auth.apiKeys={json.dumps([entry])}"])


def workload(objects: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    name = full(component)
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.fixture(scope="session")
def stack(
    built_images: dict[str, str],
    chart_objects: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, Any]]:
    """Redis (the stand-in image), Triton with its triton-sync sidecar, a CPU worker and the
    gateway, each started from its rendered pod and past its startup probe, in that order."""
    redis = workload(chart_objects, "StatefulSet", "redis")
    triton = workload(chart_objects, "Deployment", "triton")
    worker = workload(chart_objects, "Deployment", "worker-cpu")
    gateway = workload(chart_objects, "Deployment", "gateway")
    workdir = tmp_path_factory.mktemp("cluster")
    conf = images_module.write_containers_conf(workdir / "containers.conf")
    startup = request.config.stash.setdefault(STARTUP_KEY, {})
    with cluster(chart_objects, workdir, NAMESPACE, conf) as running:
        running.create([redis, triton, worker, gateway])
        started = {}
        for name, obj, container, image in (
            ("redis", redis, "redis", images_module.STANDIN_IMAGES["redis"].tag),
            ("triton", triton, "triton", None),
            ("triton-sync", triton, "triton-sync", None),
            ("worker", worker, "worker", None),
            ("gateway", gateway, "gateway", None),
        ):
            started[name] = running.start(obj, container, image)
            startup[name] = running.wait_started(started[name])
        yield {"cluster": running, "containers": started, "workdir": workdir}


# A train job of the tiny token VLM on 64 fashion-grid images, exported for serving: a minute on
# two cores, most of it evaluation and export.
TINY_TRAIN: dict[str, Any] = {
    "type": "train",
    "modelName": "image-tests",
    "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
    "dataset": {"name": "fashion-grid", "options": {"n_train": 64, "n_val": 16, "n_test": 32}},
    "budget": {"samples": 320},
    "hyperparameters": {"batchSize": 16},
    "evaluation": {
        "curvePoints": 0,
        "maxImages": 16,
        "generateImages": 4,
        "latencyRepeats": 0,
        "retrievalPools": [8],
    },
}


def gateway_client(stack: dict[str, Any], api_key: str) -> Any:
    from vlarena.client.api import GatewayClient

    gateway = stack["containers"]["gateway"]
    return GatewayClient(cluster_of(stack).url(gateway.port("http")), api_key, timeout=60)


@pytest.fixture(scope="session")
def trained(stack: dict[str, Any], api_key: str) -> dict[str, Any]:
    """TINY_TRAIN submitted through the gateway and run by the worker, to its end: the job, its
    artifact listing, and where the artifact store's claim lies on this machine."""
    running = cluster_of(stack)
    worker = stack["containers"]["worker"]
    with gateway_client(stack, api_key) as api:
        job_id = api.submit_job(TINY_TRAIN)["id"]
        deadline = time.monotonic() + 900
        while (job := api.get_job(job_id))["state"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} is still {job['state']}:\n{running.logs(worker)}")
            time.sleep(1)
        artifacts = api.artifacts(job_id)
    mount = next(m for m in worker.spec["volumeMounts"] if m["name"] == "artifacts")
    claim = running.workdir / "claims" / full("artifacts")
    return {
        "job": job,
        "artifacts": artifacts,
        "host_root": claim / Path(artifacts["root"]).relative_to(mount["mountPath"]),
        "worker_logs": running.logs(worker, tail=200),
    }


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    startup = config.stash.get(STARTUP_KEY, {})
    if startup:
        terminalreporter.section(
            "start-up: from `podman run` (or `podman-compose up`) to a passing probe"
        )
        for name, seconds in startup.items():
            terminalreporter.write_line(f"{name:12} {seconds:6.1f} s")


def cluster_of(stack: dict[str, Any]) -> Cluster:
    return stack["cluster"]
