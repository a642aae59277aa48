"""The hostile inputs of issue 18 that once answered 500 or an undocumented status: each is a
4xx in the one error shape, listed in the OpenAPI document of its route. No Triton runs here:
everything below is refused before a model would be asked."""

from __future__ import annotations

import base64
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from fuzz.served import finish_next_job, job_workdir
from vlarena.data.errors import ImageError
from vlarena.data.images import load_image
from vlarena.gateway.app import create_app
from vlarena.gateway.routes.reports import sign
from vlarena.serving.config import ServingSettings
from vlarena.settings import Settings

KEY = "hostile-secret-key-0001"
SECRET = "hostile-link-secret-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "hostile-jepa"
DEEP = 100_000


def corrupted_png() -> bytes:
    """134 bytes: a valid PNG header and a text chunk, then an IDAT chunk whose type is broken,
    which PIL reports as a SyntaxError once it decodes."""
    info = PngImagePlugin.PngInfo()
    info.add_text("c", "x" * 43)
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(out, "PNG", pnginfo=info)
    data = bytearray(out.getvalue())
    data[data.index(b"IDAT") + 1] = 0
    assert len(data) == 134
    return bytes(data)


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("hostile")
    (root / "artifacts").mkdir()
    settings = Settings(
        redis_url=redis_url,
        key_prefix=f"hostile-{uuid.uuid4().hex[:8]}:",
        artifact_dir=root / "artifacts",
        api_keys=[{"name": "mallory", "key": KEY, "scopes": ["submit"]}],  # type: ignore[list-item]
        link_secret=SECRET,
    )
    app = create_app(settings)
    app.state.serving_settings = ServingSettings(triton_url="127.0.0.1:9", triton_timeout_seconds=1)
    with TestClient(app) as client:
        spec = {
            "type": "train",
            "model": {"family": "vl-jepa", "config": {"preset": "tiny"}},
            "dataset": {"name": "emoji"},
            "budget": {"samples": 64},
            "modelName": MODEL,
        }
        job = client.post("/v1/jobs", json=spec, headers=AUTH)
        assert job.status_code == 201, job.text
        finish_next_job(settings, job_workdir(root), MODEL)
        client.job_id = job.json()["id"]  # type: ignore[attr-defined]
        yield client


def refused(api: TestClient, response: Any, status: int) -> dict[str, Any]:
    """The error of `response`, which must be `status` and listed for its route."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    return error


def documented(api: TestClient, method: str, path: str) -> set[str]:
    return set(api.app.openapi()["paths"][path][method]["responses"])  # type: ignore[attr-defined]


def test_json_nested_100_000_deep_is_422_on_the_inference_routes(api) -> None:
    deep = "[" * DEEP + "]" * DEEP
    for route in ("/v1/caption", "/v1/classify"):
        reply = api.post(route, content=deep, headers=AUTH | {"content-type": "application/json"})
        assert "nested too deeply" in refused(api, reply, 422)["message"]
        assert "422" in documented(api, "post", route)
    nested = '{"a":' * DEEP + "1" + "}" * DEEP
    reply = api.post(
        "/v1/jobs", content=nested, headers=AUTH | {"content-type": "application/json"}
    )
    assert refused(api, reply, 400)["code"] == "bad_request"


def test_a_corrupted_134_byte_png_is_415_not_500(api) -> None:
    blob = corrupted_png()
    image = base64.b64encode(blob).decode()
    reply = api.post("/v1/caption", json={"model": MODEL, "image": image}, headers=AUTH)
    assert refused(api, reply, 415)["code"] == "unsupported_media_type"
    labels = {"model": MODEL, "image": image, "labels": ["a bag", "a shoe"]}
    assert refused(api, api.post("/v1/classify", json=labels, headers=AUTH), 415)
    files = {"image": ("x.png", blob, "image/png")}
    reply = api.post("/v1/caption", data={"model": MODEL}, files=files, headers=AUTH)
    assert refused(api, reply, 415)["code"] == "unsupported_media_type"


def test_a_corrupted_png_in_a_dataset_is_an_image_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(corrupted_png())
    with pytest.raises(ImageError, match=r"broken\.png"):
        load_image(str(path), 8)


def test_a_nul_byte_in_an_artifact_or_shared_path_is_404(api) -> None:
    job = api.job_id  # type: ignore[attr-defined]
    for path in ("metrics.json%00", "%00", "vl-jepa/%00model.pt"):
        reply = api.get(f"/v1/jobs/{job}/artifacts/{path}", headers=AUTH)
        assert refused(api, reply, 404)["code"] == "not_found"
    assert api.get(f"/v1/jobs/{job}/artifacts/metrics.json", headers=AUTH).status_code == 200
    expires = int(time.time()) + 600
    link = f"/v1/shared/{job}/{expires}/{sign(SECRET.encode(), job, expires)}"
    assert api.get(f"{link}/report/report.html").status_code == 200
    for path in ("report/report.html%00", "report/%00", "%00/metrics.json"):
        assert refused(api, api.get(f"{link}/{path}"), 404)["code"] == "not_found"
    assert "404" in documented(api, "get", "/v1/shared/{job_id}/{expires}/{sig}/{path}")


def test_unparsable_bodies_are_a_documented_4xx(api) -> None:
    routes = {
        "/v1/jobs": "/v1/jobs",
        "/v1/collections": "/v1/collections",
        f"/v1/models/{MODEL}/aliases": "/v1/models/{name}/aliases",
        "/v1/embed/text": "/v1/embed/text",
        "/v1/caption": "/v1/caption",
        f"/v1/jobs/{api.job_id}/report-link": "/v1/jobs/{job_id}/report-link",  # type: ignore[attr-defined]
    }
    json_type = {"content-type": "application/json"}
    for route, path in routes.items():
        statuses = documented(api, "post", path)
        assert {"400", "422"} <= statuses
        for body in (b"{not json", b"\xff\xfe\x00", b'{"a": 1} trailing', b"[" * 5000):
            reply = api.post(route, content=body, headers=AUTH | json_type)
            assert reply.status_code in (400, 422), (route, body[:10], reply.text)
            refused(api, reply, reply.status_code)


def test_401_is_documented_on_listing_models_and_collections(api) -> None:
    for path in ("/v1/models", "/v1/collections"):
        assert refused(api, api.get(path), 401)["code"] == "unauthenticated"
        assert "401" in documented(api, "get", path)


def test_a_stream_entry_id_redis_cannot_read_after_is_422_not_500(api) -> None:
    """Found by the fuzzer: ids of the right shape past 64 bits reached Redis, which refused."""
    job = api.job_id  # type: ignore[attr-defined]
    top = 2**64 - 1
    for kind in ("logs", "events"):
        url = f"/v1/jobs/{job}/{kind}"
        for entry_id in (f"{top + 1}-0", f"0-{10**30}", f"{top}-{top}"):
            reply = api.get(url, params={"after": entry_id}, headers=AUTH)
            assert refused(api, reply, 422)["details"][0]["field"] == "after"
            reply = api.get(url, headers=AUTH | {"last-event-id": entry_id})
            assert refused(api, reply, 422)["code"] == "validation_error"
        assert api.get(url, params={"after": f"{top}-0"}, headers=AUTH).status_code == 200
