"""The gateway's inference API against a real tritonserver: every endpoint answers what
in-process PyTorch answers, collections live in Redis, limits and outages give errors that say
what to do, and the gateway imports no torch."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from PIL import Image

from vlarena.data.images import load_images
from vlarena.serving.config import ServingSettings
from vlarena.serving.triton import free_port

ATOL = 1e-3


def make_app(settings, serving: ServingSettings):
    from vlarena.gateway.app import create_app

    app = create_app(settings)
    app.state.serving_settings = serving
    return app


@pytest.fixture
def client_for(serving_settings) -> Iterator:
    opened: list[tuple[Any, TestClient]] = []

    def open_client(**serving: Any) -> TestClient:
        app = make_app(serving_settings, ServingSettings(**serving))
        client = TestClient(app)
        client.__enter__()
        opened.append((app, client))
        return client

    yield open_client
    for app, client in opened:
        service = getattr(app.state, "inference", None)
        if service is not None:
            client.portal.call(service.close)
        client.__exit__(None, None, None)


@pytest.fixture
def api(client_for, triton) -> TestClient:
    return client_for(triton_url=triton.grpc_url, triton_timeout_seconds=10)


@pytest.fixture(scope="module")
def samples(tiny_splits) -> dict[str, Any]:
    records = tiny_splits.test.records[:3]
    images = load_images([r.image for r in records], 128)
    return {
        "files": [Path(r.image).read_bytes() for r in records],
        "b64": [base64.b64encode(Path(r.image).read_bytes()).decode() for r in records],
        "images": torch.from_numpy(images),
        "labels": sorted({c for r in tiny_splits.test.records[:5] for c in r.captions}),
        "question": next(q.query for r in tiny_splits.test.records for q in r.questions),
        "choices": next(
            list(q.choices) for r in tiny_splits.test.records for q in r.questions if q.choices
        ),
    }


def _tokens(model, samples) -> torch.Tensor:
    return model.x_encoder(samples["images"])


@pytest.fixture(autouse=True)
def _no_grad() -> Iterator[None]:
    with torch.no_grad():
        yield


def _ok(response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("family", ["token-vlm", "vl-jepa"])
def test_classify_caption_and_vqa_answer_as_pytorch_does(
    api, registered, tiny_models, samples, family
):
    name, model = registered[family]["name"], tiny_models[family]
    tokens = _tokens(model, samples)
    body = {"model": name, "images": samples["b64"], "labels": samples["labels"]}
    got = _ok(api.post("/v1/classify", json=body))
    version = registered[family]["version"]
    assert got["model"] == {"name": name, "version": version, "family": family, "precision": "fp32"}
    want = model.score_candidates(tokens, samples["labels"]).numpy()
    for row, result in zip(want, got["results"], strict=True):
        ranked = [x["label"] for x in result["labels"]]
        assert ranked[0] == samples["labels"][int(row.argmax())]
        scores = {x["label"]: x["score"] for x in result["labels"]}
        np.testing.assert_allclose([scores[label] for label in samples["labels"]], row, atol=ATOL)

    got = _ok(
        api.post(
            "/v1/caption", json={"model": name, "alias": "production", "images": samples["b64"]}
        )
    )
    assert got["captions"] == model.generate(tokens)

    question, choices = samples["question"], samples["choices"]
    queries = [question] * len(tokens)
    body = {"model": name, "version": 1, "images": samples["b64"], "question": question}
    got = _ok(api.post("/v1/vqa", json=body | {"choices": choices}))
    want = model.score_candidates(tokens, choices, queries).numpy()
    assert [a["answer"] for a in got["answers"]] == [choices[int(i)] for i in want.argmax(1)]
    got = _ok(api.post("/v1/vqa", json=body))
    assert [a["answer"] for a in got["answers"]] == model.generate(tokens, queries, max_len=16)
    # Every request by name, alias or version was served by one kept model.
    assert list(api.app.state.inference._served) == [(name, version, "fp32")]


def test_multipart_uploads_answer_as_json_does(api, registered, samples):
    name = registered["token-vlm"]["name"]
    files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(samples["files"])]
    form = {"model": name, "labels": samples["labels"]}
    uploaded = _ok(api.post("/v1/classify", data=form, files=files))
    sent = _ok(api.post("/v1/classify", json={**form, "images": samples["b64"]}))
    assert uploaded == sent


def test_embeddings_match_pytorch(api, registered, tiny_models, samples):
    name, model = registered["vl-jepa"]["name"], tiny_models["vl-jepa"]
    tokens = _tokens(model, samples)
    got = _ok(api.post("/v1/embed/image", json={"model": name, "images": samples["b64"]}))
    want = F.normalize(model.predict_embedding(tokens), dim=-1).numpy()
    assert got["dim"] == want.shape[1]
    np.testing.assert_allclose(got["embeddings"], want, atol=ATOL)
    question = samples["question"]
    got = _ok(
        api.post(
            "/v1/embed/image", json={"model": name, "image": samples["b64"][0], "query": question}
        )
    )
    want = F.normalize(model.predict_embedding(tokens[:1], [question]), dim=-1).numpy()
    np.testing.assert_allclose(got["embeddings"], want, atol=ATOL)
    got = _ok(api.post("/v1/embed/text", json={"model": name, "texts": samples["labels"]}))
    with torch.no_grad():
        want = F.normalize(model.encode_text(samples["labels"]), dim=-1).numpy()
    np.testing.assert_allclose(got["embeddings"], want, atol=ATOL)

    tvlm = registered["token-vlm"]["name"]
    reply = api.post("/v1/embed/text", json={"model": tvlm, "texts": ["a bag"]})
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "unsupported_for_family"


def test_collections_persist_in_redis_and_retrieve_like_pytorch(
    api, client_for, triton, registered, tiny_models, samples
):
    name, model = registered["vl-jepa"]["name"], tiny_models["vl-jepa"]
    made = api.post("/v1/collections", json={"name": "tiny-captions", "model": name})
    assert made.status_code == 201, made.text
    assert made.json()["version"] == 1
    assert (
        api.post("/v1/collections", json={"name": "tiny-captions", "model": name}).status_code
        == 409
    )
    items = [
        {"id": f"t{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(samples["labels"])
    ]
    items += [{"id": f"i{i}", "image": b} for i, b in enumerate(samples["b64"])]
    added = _ok(api.post("/v1/collections/tiny-captions/items", json={"items": items}))
    assert added == {"added": len(items), "replaced": 0, "items": len(items)}

    # Another gateway process (or this one restarted) sees the same collection.
    other = client_for(triton_url=triton.grpc_url)
    assert [c["name"] for c in _ok(other.get("/v1/collections"))["items"]] == ["tiny-captions"]
    hits = _ok(
        other.post(
            "/v1/retrieve",
            json={
                "collection": "tiny-captions",
                "image": samples["b64"][0],
                "k": 3,
                "kind": "text",
            },
        )
    )["hits"]
    with torch.no_grad():
        query = F.normalize(model.predict_embedding(_tokens(model, samples)[:1]), dim=-1)
        texts = F.normalize(model.encode_text(samples["labels"]), dim=-1)
    order = (texts @ query[0]).argsort(descending=True)[:3].tolist()
    assert [h["id"] for h in hits] == [f"t{i}" for i in order]
    assert hits[0]["metadata"] == {"n": order[0]}

    hits = _ok(
        other.post(
            "/v1/retrieve", json={"collection": "tiny-captions", "text": samples["labels"][0]}
        )
    )["hits"]
    assert hits[0]["id"] == "t0" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert api.delete("/v1/collections/tiny-captions").status_code == 204
    assert other.get("/v1/collections/tiny-captions").status_code == 404


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


def test_limits_say_what_to_change(client_for, triton, registered, samples):
    api = client_for(
        triton_url=triton.grpc_url,
        inference_max_batch=2,
        inference_max_pixels=150 * 150,
        inference_max_image_bytes=4096,
    )
    name = registered["vl-jepa"]["name"]
    small = base64.b64encode(_png(8, 8)).decode()

    def error(response, status: int) -> str:
        assert response.status_code == status, response.text
        return response.json()["error"]["message"]

    assert "at most 2: split the batch" in error(
        api.post("/v1/caption", json={"model": name, "images": [small] * 3}), 422
    )
    big = base64.b64encode(_png(200, 200)).decode()
    assert "downscale it" in error(api.post("/v1/caption", json={"model": name, "image": big}), 413)
    noisy = Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    )
    buffer = io.BytesIO()
    noisy.save(buffer, "PNG")
    heavy = base64.b64encode(buffer.getvalue()).decode()
    assert "MiB" in error(api.post("/v1/caption", json={"model": name, "image": heavy}), 413)
    text = base64.b64encode(b"not an image at all").decode()
    assert "PNG" in error(api.post("/v1/caption", json={"model": name, "image": text}), 415)
    assert "base64" in error(api.post("/v1/caption", json={"model": name, "image": "%%%"}), 422)
    long = {"model": name, "image": small, "labels": ["a bag", "x" * 1001]}
    assert error(api.post("/v1/classify", json=long), 422).startswith("labels[1]: 1,001 characters")
    deep = "[" * 30_000 + "]" * 30_000  # a RecursionError in the JSON parser: 422, not 500
    for route in ("/v1/caption", "/v1/classify"):
        reply = api.post(route, content=deep, headers={"content-type": "application/json"})
        assert "nested too deeply" in error(reply, 422)

    def chunks():  # chunked: no Content-Length to refuse the body by
        for _ in range(10):
            yield b" " * 16384

    reply = api.post("/v1/caption", content=chunks(), headers={"content-type": "application/json"})
    assert "MiB or more" in error(reply, 413)
    reply = api.post("/v1/caption", content=b"x", headers={"content-type": "text/plain"})
    assert "multipart/form-data" in error(reply, 415)
    reply = api.post("/v1/classify", json={"model": name, "image": small, "labels": ["one"]})
    assert error(reply, 422).startswith("labels")
    assert "alias" in error(
        api.post("/v1/caption", json={"model": name, "alias": "nope", "image": small}), 404
    )
    assert error(api.post("/v1/caption", json={"model": "nobody", "image": small}), 404)


def test_a_model_no_replica_serves_yet_or_a_down_triton_gives_503_with_retry_after(
    client_for, triton, platform, registered, tiny_compare, samples
):
    path = next(
        tiny_compare["workdir"] / m["path"]
        for m in tiny_compare["result"]["models"]
        if m["family"] == "token-vlm"
    )
    name = registered["token-vlm"]["name"]
    unserved = platform.register(name, "token-vlm", path)  # a new version, no alias: not loaded
    api = client_for(triton_url=triton.grpc_url, retry_after_seconds=7)
    reply = api.post(
        "/v1/caption", json={"model": name, "version": unserved, "image": samples["b64"][0]}
    )
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"] == "7"
    assert reply.json()["error"]["code"] == "model_unavailable"

    down = client_for(triton_url=f"127.0.0.1:{free_port()}", triton_timeout_seconds=2)
    started = time.monotonic()
    reply = down.post("/v1/caption", json={"model": name, "image": samples["b64"][0]})
    assert reply.status_code == 503 and "retry-after" in reply.headers
    assert time.monotonic() - started < 5


def test_the_gateway_imports_no_torch(serving_settings):
    code = (
        "import sys\n"
        "from vlarena.settings import Settings\n"
        "from vlarena.gateway.app import create_app\n"
        "import vlarena.gateway.inference_service, vlarena.serving.pipelines\n"
        "app = create_app(Settings(auth_disabled=True))\n"
        "app.openapi()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_inference_routes_are_documented(api):
    spec = api.get("/openapi.json").json()
    for path in ("/v1/classify", "/v1/caption", "/v1/vqa", "/v1/embed/image", "/v1/retrieve"):
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        assert {"application/json", "multipart/form-data"} <= set(content), path
        assert "example" in content["application/json"]
    assert "/v1/collections/{name}/items" in spec["paths"]


def test_documented_answers_are_valid_answers():
    from vlarena.gateway import inference_schemas

    for name, example in inference_schemas.RESPONSE_EXAMPLES.items():
        getattr(inference_schemas, name).model_validate(example)
