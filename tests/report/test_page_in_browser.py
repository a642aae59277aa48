"""The report page in real headless Chromium, opened through the gateway's signed link: every
image and plot drawn, no console errors; and the link's checks."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import redis

from live_server import live_server

from .headless_chromium import check_page, chromium_path

ARTIFACTS = Path(
    os.environ.get("VLARENA_TEST_ARTIFACTS", Path(__file__).parents[2] / "build" / "test-artifacts")
)

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="needs chromium (Debian package)")


READER_KEY = "reader-key-for-the-report-tests"


@pytest.fixture(scope="module")
def gateway_with_report(tiny_compare, redis_url, tmp_path_factory):
    """A real gateway (uvicorn on a free port) whose store holds a compare job whose run
    directory is the tiny compare run's, as a worker would have left it."""
    from vlarena.gateway.app import create_app
    from vlarena.gateway.auth import key_digest
    from vlarena.jobs.spec import JOB_SPEC_ADAPTER
    from vlarena.jobs.store import JobStore, connect
    from vlarena.settings import ApiKeyEntry, Settings

    settings = Settings(
        redis_url=redis_url,
        key_prefix=f"report-{uuid.uuid4().hex[:8]}:",
        artifact_dir=tmp_path_factory.mktemp("report-artifacts"),
        api_keys=[ApiKeyEntry(name="reader", sha256=key_digest(READER_KEY), scopes=["read"])],
    )

    async def record_job(spec: dict) -> str:
        redis = connect(settings)
        store = JobStore(redis, settings)
        record, _ = await store.create(JOB_SPEC_ADAPTER.validate_python(spec), owner="tests")
        claim = await store.claim("cpu", "report-tests")
        await store.write(claim, fields={"workdir": str(tiny_compare["workdir"])})
        await store.finish(claim, "succeeded", result=tiny_compare["result"])
        await redis.aclose()
        return record.id

    job_id = asyncio.run(
        record_job(
            {"type": "compare", "dataset": {"name": "fashion-grid"}, "budget": {"samples": 8192}}
        )
    )
    with live_server(create_app(settings)) as url:
        yield {"url": url, "job": job_id, "settings": settings}


def report_link(gateway, **body) -> httpx.Response:
    return httpx.post(
        f"{gateway['url']}/v1/jobs/{gateway['job']}/report-link",
        headers={"Authorization": f"Bearer {READER_KEY}"},
        json=body or None,
    )


@pytest.fixture
def served_report(gateway_with_report):
    """The report page's signed link, as a reader gets it from the API."""
    answer = report_link(gateway_with_report)
    assert answer.status_code == 200, answer.text
    return answer.json()["url"]


def test_signed_links_are_checked(gateway_with_report, served_report):
    base, job = gateway_with_report["url"], gateway_with_report["job"]
    assert httpx.post(f"{base}/v1/jobs/{job}/report-link").status_code == 401
    page = httpx.get(served_report, follow_redirects=True)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/shared/" in str(page.url)
    # The page's relative links stay under the signed prefix, and reach only this job's files.
    prefix = str(page.url).rsplit("/report/report.html", 1)[0]
    assert httpx.get(f"{prefix}/metrics.json").json()["schema"] == "vlarena.metrics/v4"
    assert httpx.get(f"{prefix}/..%2F..%2F..%2Fetc%2Fpasswd").status_code == 404
    nul = httpx.get(f"{prefix}/metrics.json%00.html")  # a NUL byte is no path: 404, not 500
    assert nul.status_code == 404 and nul.json()["error"]["code"] == "not_found"
    # No link, a tampered one, an expired one: 401, each saying which.
    assert httpx.get(f"{base}/v1/jobs/{job}/report").json()["error"]["code"] == "link_required"
    url = httpx.URL(served_report)
    expires, sig = int(url.params["expires"]), url.params["sig"]
    tampered = httpx.get(f"{base}/v1/jobs/{job}/report?expires={expires + 1}&sig={sig}")
    assert tampered.status_code == 401 and tampered.json()["error"]["code"] == "link_invalid"
    from vlarena.gateway.routes.reports import sign

    settings = gateway_with_report["settings"]
    secret = redis.Redis.from_url(settings.redis_url).get(f"{settings.key_prefix}link-secret")
    old = int(time.time()) - 10
    expired = httpx.get(f"{base}/v1/shared/{job}/{old}/{sign(secret, job, old)}/metrics.json")
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "link_expired"
    short = report_link(gateway_with_report, expiresInSeconds=60).json()
    assert abs(datetime.fromisoformat(short["expiresAt"]).timestamp() - time.time() - 60) < 5
    assert report_link(gateway_with_report, expiresInSeconds=5).status_code == 422


def test_the_reports_index_lists_the_job_with_a_signed_link(gateway_with_report):
    base, job = gateway_with_report["url"], gateway_with_report["job"]
    assert httpx.get(f"{base}/reports").status_code == 401
    link = httpx.post(
        f"{base}/v1/reports/link", headers={"Authorization": f"Bearer {READER_KEY}"}
    ).json()["url"]
    index = httpx.get(link)
    assert index.status_code == 200 and job in index.text
    href = index.text.split('href="', 2)[2].split('"', 1)[0].replace("&amp;", "&")
    assert httpx.get(href, follow_redirects=True).status_code == 200


def test_report_page_draws_every_image_and_plot_without_console_errors(served_report):
    shot = ARTIFACTS / "report-page.png"
    page = check_page(served_report, shot)
    assert page.title.endswith("vlarena report")
    assert len(page.images) >= 8
    for img in page.images:
        assert img["naturalWidth"] > 0, f"image {img['alt']!r} did not load"
        assert img["distinctColours"] > 2, f"image {img['alt']!r} is uniform"
    assert len(page.plots) >= 6
    for plot in page.plots:
        assert plot["drawn"] and plot["traces"] > 0, f"plot {plot['id']} did not draw"
    assert page.console_errors == []
    assert shot.stat().st_size > 50_000
