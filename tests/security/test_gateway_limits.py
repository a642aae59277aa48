"""The gateway's request limits: one body limit for every route (chunked bodies counted, 413
before parsing), the key checked before the body is read, per-field limits in the schemas,
image decoding in a bounded thread pool within a pixel budget per request, per-key rate limits
and job quotas counted in Redis (so they hold across replicas), and every status a route can
answer documented in the OpenAPI document."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vlarena.gateway.app import create_app
from vlarena.gateway.errors import ApiError
from vlarena.gateway.inference_images import decode_images
from vlarena.gateway.inference_service import InferenceService
from vlarena.serving.config import ServingSettings
from vlarena.settings import Settings

KEYS = {
    "alice": "alice-secret-key-0001",
    "bob": "bob-secret-key-000002",
}
TRAIN = {
    "type": "train",
    "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
    "dataset": {"name": "emoji"},
    "budget": {"samples": 64},
}


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    (tmp_path / "artifacts").mkdir()
    return Settings(
        redis_url=redis_url,
        key_prefix=f"limits-{uuid.uuid4().hex[:8]}:",
        artifact_dir=tmp_path / "artifacts",
        api_keys=[
            {"name": name, "key": key, "scopes": ["submit"]}  # type: ignore[list-item]
            for name, key in KEYS.items()
        ],
    )


@pytest.fixture
def open_api(settings: Settings) -> Iterator[Any]:
    """Gateway replicas on one Redis, each configured with `settings` plus the overrides."""
    clients: list[TestClient] = []

    def replica(**overrides: Any) -> TestClient:
        client = TestClient(create_app(settings.model_copy(update=overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield replica
    for client in clients:
        client.__exit__(None, None, None)


def as_(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_body_over_the_limit_is_refused_413_even_when_chunked(open_api) -> None:
    api = open_api(max_body_bytes=64 * 1024)
    big = json.dumps(TRAIN | {"metadata": {"note": "x" * 100_000}})
    error = error_of(api.post("/v1/jobs", content=big, headers=as_("alice")), 413)
    assert error["code"] == "payload_too_large"
    assert "at most 0.1 MiB" in error["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length to refuse the body by
        for _ in range(100):
            yield b" " * 16384

    reply = api.post(
        "/v1/jobs", content=chunks(), headers=as_("alice") | {"content-type": "application/json"}
    )
    assert error_of(reply, 413)["code"] == "payload_too_large"
    # Every route has the limit, not only the inference ones; the key comes first.
    reply = api.post(
        "/v1/jobs/job-0123456789ab/report-link", content=chunks(), headers=as_("alice")
    )
    assert error_of(reply, 413)["code"] == "payload_too_large"
    reply = api.post("/v1/models/m/aliases", content=chunks())
    assert error_of(reply, 401)["code"] == "unauthenticated"
    assert api.get("/v1/jobs", headers=as_("alice")).json()["items"] == []


def test_the_key_is_checked_before_the_body_is_read(open_api) -> None:
    api = open_api()
    for body in (b"{not json", b"\xff\xfe", json.dumps(TRAIN).encode()):
        reply = api.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
        assert error_of(reply, 401)["code"] == "unauthenticated"
        reply = api.post(
            "/v1/jobs",
            content=body,
            headers={"content-type": "application/json", "authorization": "Bearer nope"},
        )
        assert error_of(reply, 401)["code"] == "unauthenticated"


def test_job_metadata_and_spec_strings_have_limits_naming_the_field(open_api) -> None:
    api = open_api()

    def refused(spec: dict[str, Any]) -> list[str]:
        error = error_of(api.post("/v1/jobs", json=spec, headers=as_("alice")), 422)
        return [d["field"] for d in error["details"]]

    assert refused(TRAIN | {"metadata": {"note": "x" * 1025}}) == ["metadata.note"]
    assert refused(TRAIN | {"metadata": {f"k{i}": "v" for i in range(65)}}) == ["metadata"]
    assert refused(TRAIN | {"metadata": {"k" * 129: "v"}})[0].startswith("metadata")
    assert refused(TRAIN | {"resources": {"gpuType": "g" * 129}}) == ["resources.gpuType"]
    fine = TRAIN | {"metadata": {"note": "x" * 1024}, "validateOnly": True}
    assert api.post("/v1/jobs", json=fine, headers=as_("alice")).status_code == 200


def test_collection_item_metadata_is_bounded(open_api) -> None:
    api = open_api()
    item = {"id": "a", "text": "a bag", "metadata": {"blob": "x" * 5000}}
    reply = api.post("/v1/collections/c/items", json={"items": [item]}, headers=as_("alice"))
    assert error_of(reply, 422)["details"][0]["field"] == "items.0.metadata"


def test_rate_limits_are_per_key_and_shared_by_replicas_429_with_retry_after(open_api) -> None:
    one, two = open_api(rate_limit_requests=3), open_api(rate_limit_requests=3)
    assert one.get("/v1/jobs", headers=as_("alice")).status_code == 200
    assert two.get("/v1/jobs", headers=as_("alice")).status_code == 200
    assert one.get("/v1/models", headers=as_("alice")).status_code == 200
    reply = two.get("/v1/jobs/job-0123456789ab", headers=as_("alice"))
    assert error_of(reply, 429)["code"] == "too_many_requests"
    assert 1 <= int(reply.headers["retry-after"]) <= 60
    # Refused before the body is read.
    reply = one.post("/v1/jobs", content=b"{", headers=as_("alice"))
    assert reply.status_code == 429
    assert two.get("/v1/jobs", headers=as_("bob")).status_code == 200


def test_a_key_at_its_job_quota_gets_429_until_a_job_ends(open_api) -> None:
    one, two = open_api(max_active_jobs_per_caller=1), open_api(max_active_jobs_per_caller=1)
    first = one.post("/v1/jobs", json=TRAIN | {"submissionId": "s1"}, headers=as_("alice"))
    assert first.status_code == 201, first.text
    reply = two.post("/v1/jobs", json=TRAIN, headers=as_("alice"))
    assert error_of(reply, 429)["code"] == "too_many_jobs"
    assert reply.headers["retry-after"] == "30"
    # A replay creates nothing and answers as before; another key has its own quota.
    replay = two.post("/v1/jobs", json=TRAIN | {"submissionId": "s1"}, headers=as_("alice"))
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    assert one.post("/v1/jobs", json=TRAIN, headers=as_("bob")).status_code == 201
    cancelled = one.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=as_("alice"))
    assert cancelled.json()["state"] == "CANCELLED"
    assert two.post("/v1/jobs", json=TRAIN, headers=as_("alice")).status_code == 201


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 10)).save(out, format="PNG")
    return out.getvalue()


def test_a_request_s_images_share_one_pixel_budget_checked_before_decoding() -> None:
    settings = ServingSettings(inference_max_request_pixels=3 * 100 * 100)
    assert decode_images([png(100, 100)] * 3, 8, settings).shape == (3, 3, 8, 8)
    with pytest.raises(ApiError) as refused:
        decode_images([png(100, 100)] * 4, 8, settings)
    assert refused.value.status == 413
    assert "per request: send fewer or smaller images" in refused.value.message


def test_images_are_decoded_in_a_bounded_pool_off_the_event_loop(monkeypatch) -> None:
    import vlarena.gateway.inference_service as service_module

    busy, most = 0, 0
    threads: set[int] = set()
    lock = threading.Lock()

    def slow_decode(blobs: list[bytes], size: int, settings: ServingSettings) -> np.ndarray:
        nonlocal busy, most
        with lock:
            busy += 1
            most = max(most, busy)
            threads.add(threading.get_ident())
        time.sleep(0.2)
        with lock:
            busy -= 1
        return np.zeros((len(blobs), 3, size, size), np.float32)

    monkeypatch.setattr(service_module, "decode_images", slow_decode)
    service = InferenceService(
        ServingSettings(inference_decode_threads=2),
        None,
        None,  # type: ignore[arg-type]
    )
    ticks = 0

    async def main() -> None:
        nonlocal ticks
        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(service.decode, [b""], 4)
            while busy or ticks == 0 or most < 2:
                ticks += 1  # the event loop keeps running while images decode
                await anyio.sleep(0.01)
        await service.close()

    anyio.run(main)
    assert most == 2
    assert threading.get_ident() not in threads
    assert ticks >= 20


def test_every_route_documents_the_statuses_its_checks_answer(settings: Settings) -> None:
    document = create_app(settings).openapi()
    missing = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            expected = set()
            security = operation.get("security") or []
            scopes = {s for entry in security for values in entry.values() for s in values}
            if security:
                expected |= {"401", "429"}
            if scopes - {"read"}:
                expected.add("403")
            if "requestBody" in operation:
                expected |= {"400", "413", "422"}
            if operation.get("parameters"):
                expected.add("422")
            if lacking := expected - set(operation["responses"]):
                missing.append(f"{method.upper()} {path}: {sorted(lacking)}")
    assert missing == []
    paths = document["paths"]
    assert "401" in paths["/v1/models"]["get"]["responses"]
    assert "401" in paths["/v1/collections"]["get"]["responses"]
    assert {"400", "413", "429"} <= set(paths["/v1/jobs"]["post"]["responses"])
