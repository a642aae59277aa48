"""The Triton image started as the chart's Triton pod, with its triton-sync sidecar (the gateway
image): promoting the model the worker image exported makes the sidecar load it, and Triton
answers the project's client with what onnxruntime computes from the same graph.

Here the image is built on the stand-in server (python backend): its models run the graphs with
onnxruntime inside Triton. Triton's own onnxruntime backend, which clusters use, is not tested.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from vlarena.serving.client import TritonPool, TritonRunner
from vlarena.serving.manifest import ServingManifest, triton_model_name

from .conftest import cluster_of, gateway_client

ALIAS = "production"


@pytest.fixture(scope="module")
def promoted(stack: dict[str, Any], trained: dict[str, Any], api_key: str) -> dict[str, Any]:
    """The trained version promoted, and loaded by triton-sync into Triton."""
    running = cluster_of(stack)
    model = trained["job"]["models"][0]
    with gateway_client(stack, api_key) as api:
        api.set_alias(model["name"], ALIAS, model["version"])
    grpc_url = f"127.0.0.1:{running.published[stack['containers']['triton'].port('grpc')]}"
    name = triton_model_name(model["name"], "vision")

    async def loaded() -> bool:
        pool = TritonPool(grpc_url)
        try:
            return await pool.model_ready(name, model["version"])
        finally:
            await pool.close()

    # The tiny model's graphs load in seconds; the sidecar retries what fails each interval.
    deadline = time.monotonic() + 120
    while not asyncio.run(loaded()):
        if time.monotonic() > deadline:
            pytest.fail(
                f"{name} v{model['version']} was not loaded:\n"
                f"{running.logs(stack['containers']['triton-sync'])}\n"
                f"{running.logs(stack['containers']['triton'])}"
            )
        time.sleep(1)
    return {**model, "grpc_url": grpc_url}


def test_triton_serves_the_workers_export_to_the_project_client(
    promoted: dict[str, Any], trained: dict[str, Any]
) -> None:
    export = next(
        p
        for p in (item["path"] for item in trained["artifacts"]["items"])
        if p.endswith("export/serving.json")
    )
    export_dir = (trained["host_root"] / export).parent
    part = ServingManifest.load(export_dir).parts["vision"]
    (tensor,) = part.inputs
    assert -1 not in tensor.dims, tensor
    images = np.random.default_rng(0).standard_normal((3, *tensor.dims)).astype(np.float32)
    outputs = [o.name for o in part.outputs]

    async def served() -> dict[str, np.ndarray]:
        pool = TritonPool(promoted["grpc_url"])
        try:
            runner = TritonRunner(pool, promoted["name"], promoted["version"])
            return await runner.run("vision", "fp32", {tensor.name: images}, outputs)
        finally:
            await pool.close()

    answer = asyncio.run(served())
    session = ort.InferenceSession(str(export_dir / part.file), providers=["CPUExecutionProvider"])
    expected = dict(zip(outputs, session.run(outputs, {tensor.name: images}), strict=True))
    for name in outputs:
        assert answer[name].shape == expected[name].shape, name
        np.testing.assert_allclose(answer[name], expected[name], rtol=1e-4, atol=1e-4)


def test_triton_sidecar_fills_the_repository_for_the_python_backend(
    promoted: dict[str, Any], stack: dict[str, Any]
) -> None:
    running = cluster_of(stack)
    triton = stack["containers"]["triton"]
    repository = next(m for m in triton.spec["volumeMounts"] if m["name"] == "models")
    version_dir = f"{repository['mountPath']}/{triton_model_name(promoted['name'], 'vision')}/{promoted['version']}"
    listing = running.exec(triton, "ls", version_dir)
    assert set(listing.stdout.split()) >= {"model.onnx", "model.py"}, listing.stderr
    # The sidecar wrote it as its user; Triton reads it through the pod's fsGroup.
    assert running.exec(triton, "id", "-u").stdout.strip() == str(
        triton.spec["securityContext"]["runAsUser"]
    )
