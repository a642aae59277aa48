"""The gateway's contract: validation, auth, idempotency, restarts, registry, metrics, OpenAPI."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from platform_harness import (
    TERMINAL,
    Gateway,
    WorkerPool,
    get_job,
    submit,
    tiny_train,
    wait_for_state,
)

from vlarena.gateway.observe import FLUSH_SECONDS
from vlarena.jobs.spec import JOB_SPEC_ADAPTER

REPO = Path(__file__).resolve().parents[2]


def _gpu_job(**fields: Any) -> dict[str, Any]:
    """A job no test worker takes (they serve only the cpu queue): it stays QUEUED."""
    return tiny_train(resources={"gpus": 1, "gpuType": "nvidia-h100"}, **fields)


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"budget": {"samples": 0}}, "budget.samples", "greater than 0"),
        ({"budget": {"samples": 10, "steps": 5}}, "budget", "exactly one"),
        ({"model": {"family": "gpt-2"}}, "model.family", "token-vlm"),
        ({"hyperparameters": {"batchSize": -1}}, "hyperparameters.batchSize", "greater"),
        ({"hyperparameters": {"learningrate": 1}}, "hyperparameters.learningrate", "not permitted"),
        ({"resources": {"nodes": 0}}, "resources.nodes", "greater than or equal to 1"),
        ({"dataset": {"uri": "relative/manifest.jsonl"}}, "dataset.uri", "absolute"),
        ({"dataset": None}, "dataset", ""),
        ({"type": "finetune"}, "type", "finetune"),
        ({"priority": 5000}, "priority", "less than or equal"),
        ({"colour": "blue"}, "colour", "not permitted"),
    ],
)
def test_bad_spec_gets_422_naming_the_field_path(
    gateway: Gateway, change: dict[str, Any], field: str, says: str
) -> None:
    spec = {k: v for k, v in (tiny_train() | change).items() if v is not None}
    with gateway.client("alice") as client:
        response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    fields = [d["field"] for d in error["details"]]
    assert field in fields, fields
    assert says in error["message"] or says in str(error["details"])


def test_validate_only_creates_nothing(gateway: Gateway) -> None:
    with gateway.client("alice") as client:
        before = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
        answer = client.post("/v1/jobs", json=tiny_train(validateOnly=True))
        after = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
    assert answer.status_code == 200
    assert answer.json()["valid"] and answer.json()["queue"] == "cpu"
    assert "validateOnly" not in answer.json()["spec"]
    assert len(after) == len(before)


def test_requests_without_a_valid_key_get_401(gateway: Gateway) -> None:
    with gateway.client("alice") as alice:
        job = submit(alice, _gpu_job())
    with gateway.client(None) as anonymous:
        missing = anonymous.get("/v1/jobs")
        wrong = anonymous.get("/v1/jobs", headers={"Authorization": "Bearer not-a-key"})
        one = anonymous.get(f"/v1/jobs/{job['id']}")  # the route that authorises inline
        assert anonymous.get("/healthz").status_code == 200
    for response in (missing, wrong, one):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_keys_without_the_scope_get_403(gateway: Gateway) -> None:
    with gateway.client("reader") as reader, gateway.client("alice") as alice:
        assert reader.get("/v1/jobs").status_code == 200
        refused = reader.post("/v1/jobs", json=tiny_train(validateOnly=True))
        assert refused.status_code == 403
        assert "submit" in refused.json()["error"]["message"]
        alias = reader.post(
            "/v1/models/any-model/aliases", json={"alias": "production", "version": 1}
        )
        assert alias.status_code == 403
        # A submit key has the scope; the model's owner is checked next (tests/security).
        unknown = alice.post(
            "/v1/models/any-model/aliases", json={"alias": "production", "version": 1}
        )
        assert unknown.status_code == 404


def test_only_the_owner_or_an_admin_cancels_a_job(gateway: Gateway) -> None:
    with gateway.client("alice") as alice, gateway.client("bob") as bob:
        job = submit(alice, _gpu_job())
        refused = bob.post(f"/v1/jobs/{job['id']}/cancel")
        assert refused.status_code == 403
    with gateway.client("root") as root:
        answer = root.post(f"/v1/jobs/{job['id']}/cancel")
    assert answer.status_code == 202 and answer.json()["state"] == "CANCELLED"


def test_repeated_submission_id_returns_the_same_job(gateway: Gateway) -> None:
    spec = _gpu_job(submissionId="nightly-42")
    with gateway.client("alice") as alice, gateway.client("bob") as bob:
        first = alice.post("/v1/jobs", json=spec)
        again = alice.post("/v1/jobs", json=spec)
        other_owner = bob.post("/v1/jobs", json=spec)
        conflicting = alice.post("/v1/jobs", json=spec | {"priority": 7})
        for response in (first, other_owner):
            alice.post(f"/v1/jobs/{response.json()['id']}/cancel")
            bob.post(f"/v1/jobs/{response.json()['id']}/cancel")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == f"/v1/jobs/{first.json()['id']}"
    assert other_owner.status_code == 201 and other_owner.json()["id"] != first.json()["id"]
    assert conflicting.status_code == 409
    assert conflicting.json()["error"]["details"]["jobId"] == first.json()["id"]


def test_gpu_job_stays_queued_and_says_why_while_no_gpu_worker_runs(
    gateway: Gateway, workers: WorkerPool
) -> None:
    workers.ensure(1)
    with gateway.client("alice") as client:
        job = submit(client, _gpu_job())
        events = client.get(f"/v1/jobs/{job['id']}/events").json()["items"]
        state = get_job(client, job["id"])["state"]
        client.post(f"/v1/jobs/{job['id']}/cancel")
    assert job["queue"] == "gpu" and state == "QUEUED"
    assert [e["reason"] for e in events] == ["Created", "NoWorker"]
    assert "gpu" in events[1]["message"]


def test_gateway_restart_loses_nothing(gateway: Gateway, trained_job: dict[str, Any]) -> None:
    with gateway.client("alice") as client:
        waiting = submit(client, _gpu_job(submissionId="survives-restart"))
        before = {
            job_id: get_job(client, job_id) for job_id in (waiting["id"], trained_job["job"]["id"])
        }
        logs_before = client.get(f"/v1/jobs/{trained_job['job']['id']}/logs").json()
        listed_before = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
    gateway.restart()
    with gateway.client("alice") as client:
        after = {job_id: get_job(client, job_id) for job_id in before}
        logs_after = client.get(f"/v1/jobs/{trained_job['job']['id']}/logs").json()
        listed_after = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
        replay = client.post("/v1/jobs", json=_gpu_job(submissionId="survives-restart"))
        client.post(f"/v1/jobs/{waiting['id']}/cancel")
    assert after == before
    assert logs_after == logs_before
    assert listed_after == listed_before
    assert replay.status_code == 200 and replay.json()["id"] == waiting["id"]


def test_jobs_are_listed_newest_first_by_state_and_type_page_by_page(gateway: Gateway) -> None:
    with gateway.client("alice") as client:
        created = [submit(client, _gpu_job())["id"] for _ in range(3)]
        page = client.get("/v1/jobs", params={"limit": 2, "state": "QUEUED", "type": "train"})
        rest = client.get(
            "/v1/jobs",
            params={"limit": 2, "state": "QUEUED", "cursor": page.json()["nextCursor"]},
        )
        for job_id in created:
            client.post(f"/v1/jobs/{job_id}/cancel")
        cancelled = client.get("/v1/jobs", params={"state": ["CANCELLED"], "limit": 200})
    ids = [j["id"] for j in page.json()["items"]] + [j["id"] for j in rest.json()["items"]]
    assert ids[:3] == created[::-1]
    assert set(created) <= {j["id"] for j in cancelled.json()["items"]}


def test_evaluate_job_reads_the_model_an_alias_points_at(
    gateway: Gateway, workers: WorkerPool, trained_job: dict[str, Any]
) -> None:
    workers.ensure(1)
    with gateway.client("root") as root:
        promoted = root.post(
            "/v1/models/platform-test-model/aliases", json={"alias": "production", "version": 1}
        )
        assert promoted.status_code == 200 and promoted.json()["aliases"] == {"production": 1}
        assert (
            root.post(
                "/v1/models/platform-test-model/aliases", json={"alias": "candidate", "version": 9}
            ).status_code
            == 404
        )
    spec = {
        "type": "evaluate",
        "source": {"model": "platform-test-model", "alias": "production"},
        "dataset": tiny_train()["dataset"],
        "evaluation": tiny_train()["evaluation"],
    }
    with gateway.client("alice") as client:
        job = submit(client, spec)
        assert job["spec"]["source"]["runDir"] == trained_job["job"]["workdir"]
        done = wait_for_state(client, job["id"], TERMINAL, 90)
        unknown = client.post("/v1/jobs", json=spec | {"source": {"model": "no-such-model"}})
    assert done["state"] == "SUCCEEDED", done.get("error")
    assert "caption_of_10" in done["metrics"]["values"]
    assert unknown.status_code == 422
    assert unknown.json()["error"]["details"][0]["field"] == "source.model"


def _sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.rsplit(" ", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_requests_of_every_gateway_process(gateway: Gateway) -> None:
    labels = {"route": "/v1/jobs/{job_id}", "method": "GET", "status": "404"}

    def count() -> float:
        text = httpx.get(f"{gateway.url}/metrics").text
        return _sample(text, "vlarena_http_requests_total", labels) or 0

    # Each process writes its tally at least once per FLUSH_SECONDS: what earlier tests asked
    # is in every series once that has passed.
    time.sleep(FLUSH_SECONDS + 0.5)
    with gateway.client("reader") as client:
        before = count()
        for _ in range(40):
            # New connections, so both uvicorn processes answer some.
            httpx.get(f"{gateway.url}/v1/jobs/job-00000000000000", headers=client.headers)
        deadline = time.monotonic() + 10 * FLUSH_SECONDS
        while count() < before + 40 and time.monotonic() < deadline:
            time.sleep(FLUSH_SECONDS / 4)
        scrapes = [httpx.get(f"{gateway.url}/metrics").text for _ in range(6)]
    counts = {_sample(text, "vlarena_http_requests_total", labels) for text in scrapes}
    assert counts == {before + 40}
    text = scrapes[-1]
    assert _sample(text, "vlarena_jobs", {"state": "SUCCEEDED", "type": "train"}) is not None
    assert _sample(text, "vlarena_queue_jobs", {"queue": "cpu"}) is not None
    latency = {"le": "+Inf", "route": "/v1/jobs/{job_id}", "method": "GET"}
    assert (_sample(text, "vlarena_http_request_duration_seconds_bucket", latency) or 0) >= 40


def test_openapi_documents_every_route_with_examples(gateway: Gateway) -> None:
    document = httpx.get(f"{gateway.url}/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            ok = (
                operation["responses"].get("200")
                or operation["responses"].get("201")
                or (operation["responses"].get("202") or operation["responses"].get("204"))
            )
            redirect = operation["responses"].get("307")
            assert ok is not None or redirect is not None, (method, path)
            if "204" in operation["responses"] or ok is None:
                continue
            assert "example" in str(ok), f"{method.upper()} {path} has no response example"
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["examples"]) >= {"train", "compare", "evaluate", "validateOnly"}
    # the route that authorises inline declares the same security as those using a dependency
    listing = document["paths"]["/v1/jobs"]["get"]["security"]
    assert document["paths"]["/v1/jobs/{job_id}"]["get"]["security"] == listing
    assert listing == [{"apiKey": ["read"]}]


def test_readyz_reports_redis(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/readyz")
    assert response.status_code == 200 and response.json()["checks"] == {"redis": "ok"}


def test_importing_the_gateway_does_not_import_torch() -> None:
    code = "import sys, vlarena.gateway.app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_example_job_specs_are_valid() -> None:
    files = sorted((REPO / "training-jobs").glob("*.yaml"))
    assert files
    for path in files:
        JOB_SPEC_ADAPTER.validate_python(yaml.safe_load(path.read_text()))


def test_a_job_etag_follows_its_revision(gateway: Gateway) -> None:
    with gateway.client("alice") as client:
        job = submit(client, _gpu_job())
        first = client.get(f"/v1/jobs/{job['id']}")
        unchanged = client.get(
            f"/v1/jobs/{job['id']}", headers={"If-None-Match": first.headers["ETag"]}
        )
        client.post(f"/v1/jobs/{job['id']}/cancel")
        changed = client.get(
            f"/v1/jobs/{job['id']}", headers={"If-None-Match": first.headers["ETag"]}
        )
    assert first.status_code == 200 and unchanged.status_code == 304
    assert changed.status_code == 200 and changed.json()["state"] == "CANCELLED"
    assert changed.json()["revision"] > first.json()["revision"]
    assert changed.headers["ETag"] != first.headers["ETag"]


def test_the_api_normalises_a_spec_as_the_cli_and_a_yaml_file_do(
    gateway: Gateway, tmp_path: Path
) -> None:
    """The same settings through the API, a YAML file and the CLI give one spec.json."""
    from tests.experiments.test_spec_parity import ARGV, AS_JSON, cli_spec

    from vlarena.experiments.cli import spec_from_file
    from vlarena.jobs.spec import spec_document

    with gateway.client("alice") as client:
        answer = client.post("/v1/jobs", json={**AS_JSON, "validateOnly": True})
    assert answer.status_code == 200, answer.text
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(AS_JSON))
    assert answer.json()["spec"] == spec_document(spec_from_file(path))
    assert answer.json()["spec"] == spec_document(cli_spec(ARGV))
