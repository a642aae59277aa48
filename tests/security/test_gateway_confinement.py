"""The gateway refuses, before queueing, a spec naming a path outside the roots (422 naming the
field, the same answer whether the path exists or not); a signed report link opens the report
and its figures, never the run's models or checkpoints."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from vlarena.gateway.app import create_app
from vlarena.jobs.spec import JOB_SPEC_ADAPTER
from vlarena.jobs.store import JobStore, connect
from vlarena.settings import Settings

TRAIN = {
    "type": "train",
    "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
    "budget": {"samples": 64},
}


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "data").mkdir()
    return Settings(
        redis_url=redis_url,
        key_prefix=f"confine-{uuid.uuid4().hex[:8]}:",
        artifact_dir=tmp_path / "artifacts",
        data_roots=[tmp_path / "data"],
        auth_disabled=True,
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def queued(api: TestClient) -> int:
    return len(api.get("/v1/jobs").json()["items"])


def refused(api: TestClient, spec: dict[str, Any], field: str) -> str:
    answer = api.post("/v1/jobs", json=spec)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [field]
    return str(error["details"][0]["message"])


def test_a_dataset_outside_the_roots_is_refused_before_queueing(
    api: TestClient, settings: Settings
) -> None:
    exists = refused(api, TRAIN | {"dataset": {"uri": "/etc/passwd"}}, "dataset.uri")
    missing = refused(api, TRAIN | {"dataset": {"uri": "/etc/vlarena-missing"}}, "dataset.uri")
    # The same answer either way: nothing tells whether a file outside the roots exists.
    assert exists.replace("/etc/passwd", "X") == missing.replace("/etc/vlarena-missing", "X")
    assert "invalid JSON" not in exists
    data = settings.data_roots[0]
    refused(api, TRAIN | {"dataset": {"uri": f"{data}/../../../etc/passwd"}}, "dataset.uri")
    refused(api, TRAIN | {"dataset": {"uri": "file:///dev/zero"}}, "dataset.uri")
    assert queued(api) == 0
    (data / "manifest.jsonl").write_text("{}\n")
    inside = TRAIN | {"dataset": {"uri": f"{data}/manifest.jsonl"}, "validateOnly": True}
    assert api.post("/v1/jobs", json=inside).status_code == 200


def test_an_evaluate_job_reads_runs_under_the_roots_only(
    api: TestClient, settings: Settings
) -> None:
    plain_file = settings.artifact_dir / "model.pt"
    plain_file.write_bytes(b"not a run directory")
    evaluate = {"type": "evaluate", "dataset": {"name": "emoji"}}
    message = refused(api, evaluate | {"source": {"runDir": str(plain_file)}}, "source.runDir")
    assert "is not a directory" in message
    for outside in ("/etc", "/", "/tmp/../root"):
        message = refused(api, evaluate | {"source": {"runDir": outside}}, "source.runDir")
        assert "is outside the directories" in message
    assert queued(api) == 0
    run = settings.artifact_dir / "jobs" / "job-0123456789ab" / "attempt-1"
    run.mkdir(parents=True)
    inside = evaluate | {"source": {"runDir": str(run)}, "validateOnly": True}
    assert api.post("/v1/jobs", json=inside).status_code == 200


def recorded_compare_job(settings: Settings, workdir: Path) -> str:
    """A succeeded compare job whose run directory is `workdir`, as a worker leaves it."""

    async def record() -> str:
        redis = connect(settings)
        store = JobStore(redis, settings)
        spec = {"type": "compare", "dataset": {"name": "emoji"}, "budget": {"samples": 64}}
        job, _ = await store.create(JOB_SPEC_ADAPTER.validate_python(spec), owner="tests")
        claim = await store.claim("cpu", "confinement-tests")
        assert claim is not None
        await store.write(claim, fields={"workdir": str(workdir)})
        await store.finish(claim, "succeeded", result={"metrics": {}, "artifacts": []})
        await redis.aclose()
        return job.id

    return asyncio.run(record())


def test_a_signed_link_opens_the_report_and_its_figures_only(
    settings: Settings, tmp_path: Path
) -> None:
    workdir = settings.artifact_dir / "jobs" / "job-0123456789ab" / "attempt-1"
    (workdir / "report" / "figures").mkdir(parents=True)
    (workdir / "report" / "report.html").write_text("<!DOCTYPE html><title>report</title>")
    (workdir / "report" / "figures" / "quality.png").write_bytes(b"png")
    (workdir / "metrics.json").write_text('{"schema": "vlarena.metrics/v4"}')
    for secret in ("token-vlm/seed0/model.pt", "token-vlm/seed0/checkpoint.pt", "spec.json"):
        (workdir / secret).parent.mkdir(parents=True, exist_ok=True)
        (workdir / secret).write_bytes(b"weights")
    (workdir / "report" / "model.pt").symlink_to(workdir / "token-vlm" / "seed0" / "model.pt")
    job_id = recorded_compare_job(settings, workdir)
    with TestClient(create_app(settings)) as api:
        link = api.post(f"/v1/jobs/{job_id}/report-link").json()["url"]
        page = api.get(link, follow_redirects=True)
        assert page.status_code == 200 and "<title>report</title>" in page.text
        prefix = str(page.url).rsplit("/report/report.html", 1)[0]
        assert api.get(f"{prefix}/report/figures/quality.png").content == b"png"
        assert api.get(f"{prefix}/metrics.json").json()["schema"] == "vlarena.metrics/v4"
        for secret in (
            "token-vlm/seed0/model.pt",
            "token-vlm/seed0/checkpoint.pt",
            "spec.json",
            "report/model.pt",  # a link out of report/ counts where it leads
            "report/../token-vlm/seed0/model.pt",
        ):
            answer = api.get(f"{prefix}/{secret}")
            assert answer.status_code == 404, secret
            assert answer.json()["error"]["code"] == "not_found"
        # The API key still reaches every artifact.
        model = api.get(f"/v1/jobs/{job_id}/artifacts/token-vlm/seed0/model.pt")
        assert model.status_code == 200 and model.content == b"weights"
