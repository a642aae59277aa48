"""docker-compose.yml brought up by podman-compose on the built images, with the overlay
services/compose/standins.yml (stand-ins for Redis and Prometheus; Grafana left out, since no
Grafana server can be installed here): a job goes through the gateway, succeeds, is promoted
and queried, and Prometheus scrapes every component."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deploy.rendering import ROOT, VENV_BIN

from .conftest import MODE, STARTUP_KEY, TINY_TRAIN, images_module

OVERLAY = ROOT / "services" / "compose" / "standins.yml"
# The ports docker-compose.yml publishes on 127.0.0.1.
GATEWAY, PROMETHEUS = "http://127.0.0.1:8080", "http://127.0.0.1:9090"


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = check()
            if value:
                return value
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(1)


@pytest.fixture(scope="module")
def compose(
    built_images: dict[str, str],
    api_key: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, Any]]:
    from vlarena.gateway.auth import key_digest

    tool = shutil.which("podman-compose", path=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    taken = [p for p in (8080, 9090) if port_taken(p)]
    reason = (
        "podman-compose is not installed: `make image-tools` installs it"
        if tool is None
        else f"docker-compose.yml publishes 127.0.0.1:{taken} ports, which are taken"
        if taken
        else None
    )
    if reason and MODE == "require":
        pytest.fail(reason, pytrace=False)
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("compose")
    keys = workdir / "api-keys.json"
    keys.write_text(
        json.dumps([{"name": "compose", "sha256": key_digest(api_key), "scopes": ["admin"]}])
    )
    keys.chmod(0o644)
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(images_module.write_containers_conf(workdir / "containers.conf")),
        "VLARENA_API_KEYS_PATH": str(keys),
        # The file requires it even with Grafana left out.
        "GRAFANA_ADMIN_PASSWORD": "unused",
    }
    project = f"vlarena-images-{os.getpid()}"
    command = [
        tool,
        "--project-name",
        project,
        "-f",
        str(ROOT / "docker-compose.yml"),
        "-f",
        str(OVERLAY),
    ]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )

    started = time.monotonic()
    up = run("up", "--detach", "--no-build")
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        wait_for(
            lambda: httpx.get(f"{GATEWAY}/readyz", timeout=2).status_code == 200, 180, "/readyz"
        )
        startup = request.config.stash.setdefault(STARTUP_KEY, {})
        startup["compose up"] = time.monotonic() - started
        yield {"project": project, "env": env, "run": run}
    finally:
        run("down", "--volumes")


def client(api_key: str) -> Any:
    from vlarena.client.api import GatewayClient

    return GatewayClient(GATEWAY, api_key, timeout=60)


@pytest.fixture(scope="module")
def promoted(compose: dict[str, Any], api_key: str) -> dict[str, Any]:
    with client(api_key) as api:
        job_id = api.submit_job(TINY_TRAIN)["id"]
        job = wait_for(
            lambda: (
                (j := api.get_job(job_id))["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") and j
            ),
            600,
            f"job {job_id}",
        )
        assert job["state"] == "SUCCEEDED", job.get("error")
        (model,) = job["models"]
        api.set_alias(model["name"], "production", model["version"])
        return {"job": job, "model": api.get_model(model["name"]), **model}


def test_compose_runs_a_job_through_the_gateway_and_promotes_it(
    promoted: dict[str, Any], api_key: str
) -> None:
    assert promoted["model"]["aliases"] == {"production": promoted["version"]}
    with client(api_key) as api:
        (version,) = api.versions(promoted["name"])["items"]
    assert (version["status"], version["sourceJob"]) == ("READY", promoted["job"]["id"])


def test_compose_prometheus_scrapes_every_component(compose: dict[str, Any]) -> None:
    def healthy() -> set[str]:
        targets = httpx.get(f"{PROMETHEUS}/api/v1/targets", timeout=5).json()["data"]
        up = {t["labels"]["job"] for t in targets["activeTargets"] if t["health"] == "up"}
        return up if up >= {"vlarena-gateway", "vlarena-worker", "triton"} else set()

    wait_for(healthy, 60, "Prometheus to scrape the gateway, the worker and Triton")


def test_compose_serves_the_promoted_model_through_the_gateway(
    promoted: dict[str, Any], api_key: str
) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (28, 28), (200, 30, 30)).save(buffer, format="PNG")
    request = {
        "model": promoted["name"],
        "alias": "production",
        "images": [base64.b64encode(buffer.getvalue()).decode()],
        "labels": ["a bag", "a dress"],
    }
    with client(api_key) as api:

        def classified() -> dict[str, Any] | None:
            from vlarena.client.api import GatewayError

            try:
                return api.infer("classify", request)
            except GatewayError as error:
                if error.status in (409, 503):
                    return None
                raise

        answer = wait_for(classified, 90, "the promoted model to be served")
    assert answer["results"][0]["labels"]
