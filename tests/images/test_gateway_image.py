"""The gateway image started as the chart's gateway pod: it passes its probes, documents its API,
authenticates requests, runs as the chart's non-root user on a read-only root, and has no torch."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .conftest import cluster_of

# The ML stack the gateway must not carry (numpy is there: tritonclient needs it).
ML_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "matplotlib")


def get(url: str, key: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def gateway_url(stack: dict[str, Any], path: str) -> str:
    gateway = stack["containers"]["gateway"]
    return cluster_of(stack).url(gateway.port("http"), path)


def test_gateway_answers_its_probes_and_documents_its_api(stack: dict[str, Any]) -> None:
    for path in ("/healthz", "/readyz"):
        assert get(gateway_url(stack, path))[0] == 200, path
    status, body = get(gateway_url(stack, "/openapi.json"))
    assert status == 200
    paths = json.loads(body)["paths"]
    assert {"/v1/jobs", "/v1/models", "/healthz"} <= set(paths)


def test_gateway_authenticates_with_the_key_from_the_charts_secret(
    stack: dict[str, Any], api_key: str
) -> None:
    assert get(gateway_url(stack, "/v1/jobs"))[0] == 401
    assert get(gateway_url(stack, "/v1/jobs"), api_key)[0] == 200


def test_gateway_image_has_no_ml_stack(stack: dict[str, Any]) -> None:
    gateway = stack["containers"]["gateway"]
    code = (
        "import importlib.util, sys; "
        f"found = [m for m in {ML_PACKAGES!r} if importlib.util.find_spec(m)]; "
        "print(found); sys.exit(bool(found))"
    )
    result = cluster_of(stack).exec(gateway, "python", "-c", code)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_runs_as_the_charts_user_on_a_read_only_root(stack: dict[str, Any]) -> None:
    running = cluster_of(stack)
    gateway = stack["containers"]["gateway"]
    context = gateway.pod["securityContext"]
    assert running.exec(gateway, "id", "-u").stdout.strip() == str(context["runAsUser"])
    assert str(context["fsGroup"]) in running.exec(gateway, "id", "-G").stdout.split()
    denied = running.exec(gateway, "touch", "/home/vlarena/x")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    # What it writes goes to its writable volumes (/tmp, the artifact store), as its user.
    for mount in gateway.spec["volumeMounts"]:
        if not mount.get("readOnly"):
            touched = running.exec(gateway, "touch", f"{mount['mountPath']}/.written")
            assert touched.returncode == 0, f"{mount['mountPath']}: {touched.stderr}"
