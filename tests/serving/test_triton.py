"""The local tritonserver: it serves the exported graphs as onnxruntime runs them, batches
concurrent requests, and its failures come back as "retry later", never as a hang."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

import numpy as np
import pytest

from vlarena.data.images import load_images
from vlarena.serving.client import ServingUnavailable, TritonPool, TritonRunner
from vlarena.serving.pipelines import OnnxRunner, ServedModel
from vlarena.serving.triton import LocalTriton, free_port


def test_the_launcher_binds_loopback_in_explicit_model_control(tmp_path):
    command = LocalTriton(tmp_path / "repo", workdir=tmp_path, load_models=["m.vision"]).command()
    assert "--model-control-mode=explicit" in command
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        assert f"{flag}=127.0.0.1" in command
    assert "--load-model=m.vision" in command
    stub = tmp_path / "backends" / "python" / "triton_python_backend_stub"
    assert stub.is_symlink()


@pytest.mark.parametrize("family", ["token-vlm", "vl-jepa"])
def test_triton_answers_as_the_graphs_do_in_process(
    triton, registered, tiny_exports, tiny_splits, family
):
    manifest, reg = tiny_exports[family], registered[family]
    images = load_images([r.image for r in tiny_splits.test.records[:3]], manifest.image_size)
    questions = [
        r.questions[0].query if r.questions else None for r in tiny_splits.test.records[:3]
    ]
    labels = sorted({c for r in tiny_splits.test.records[:6] for c in r.captions})

    async def both() -> tuple[dict, dict]:
        pool = TritonPool(triton.grpc_url)
        try:
            out = []
            for runner in (TritonRunner(pool, reg["name"], reg["version"]), OnnxRunner(manifest)):
                served = ServedModel(manifest, runner)
                tokens = await served.image_tokens(images)
                out.append(
                    {
                        "tokens": tokens,
                        "scores": await served.score_candidates(tokens, labels, questions),
                        "captions": await served.generate(tokens),
                        "answers": await served.generate(tokens, questions),
                    }
                )
            return out[0], out[1]
        finally:
            await pool.close()

    served, local = asyncio.run(both())
    np.testing.assert_allclose(served["tokens"], local["tokens"], atol=1e-5)
    np.testing.assert_allclose(served["scores"], local["scores"], atol=1e-5)
    assert served["captions"] == local["captions"]
    assert served["answers"] == local["answers"]


def _metric(url: str, name: str, model: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    pattern = rf'^{name}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE))


def test_dynamic_batching_runs_concurrent_requests_together(triton, registered, tiny_exports):
    name = f"{registered['vl-jepa']['name']}.vision"
    before = [
        _metric(triton.metrics_url, n, name)
        for n in ("nv_inference_count", "nv_inference_exec_count")
    ]
    image = np.zeros((1, 3, 128, 128), np.float32)

    async def burst() -> None:
        pool = TritonPool(triton.grpc_url, size=2)
        try:
            await asyncio.gather(
                *(pool.infer(name, 1, {"images": image}, ["tokens"]) for _ in range(24))
            )
        finally:
            await pool.close()

    asyncio.run(burst())
    # Triton counts a request after its response may have reached the client: on a busy
    # machine the last few can show a moment later, so read until all 24 do.
    deadline = time.monotonic() + 10
    while True:
        after = [
            _metric(triton.metrics_url, n, name)
            for n in ("nv_inference_count", "nv_inference_exec_count")
        ]
        inferences, executions = after[0] - before[0], after[1] - before[1]
        if inferences >= 24 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert inferences == 24
    assert executions < inferences


def test_an_unloaded_model_or_an_unreachable_triton_means_retry_later(triton):
    image = np.zeros((1, 3, 128, 128), np.float32)

    async def call(url: str, model: str) -> None:
        pool = TritonPool(url, timeout_s=3)
        try:
            await pool.infer(model, 1, {"images": image}, ["tokens"])
        finally:
            await pool.close()

    with pytest.raises(ServingUnavailable, match="not loaded"):
        asyncio.run(call(triton.grpc_url, "nobody.vision"))
    started = time.monotonic()
    with pytest.raises(ServingUnavailable):
        asyncio.run(call(f"127.0.0.1:{free_port()}", "nobody.vision"))
    assert time.monotonic() - started < 5
