"""The API fuzzer: schemathesis over every operation of the gateway's OpenAPI document, in
process (ASGI) against a real Redis, with path parameters that name real objects half of the
time (a finished job with artifacts, a registered model with an alias, a collection) and keys
of every kind (owner, stranger, admin, read-only, none, unknown). No Triton runs: the inference
routes must answer their documented 503.

Every response is checked for server errors, statuses the document does not list, and bodies
that break their schema. `make test` runs a few examples per operation; `make fuzz` runs the
same test with `VLARENA_FUZZ_EXAMPLES` large (≥ 5,000 cases in all) and prints its summary."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from fuzz.served import finish_next_job, job_workdir
from vlarena.gateway.app import create_app
from vlarena.gateway.routes.reports import sign
from vlarena.serving.config import ServingSettings
from vlarena.serving.triton import free_port
from vlarena.settings import Settings

pytestmark = pytest.mark.fuzz

# Examples per operation and generation mode (positive and negative): 33 operations × 2 × 90
# ≈ 5,500 cases in `make fuzz`, × 6 in `make test`. Past `VLARENA_FUZZ_SECONDS` (2 minutes in
# `make test`) each remaining operation gets one example per mode, so every one is still tried.
EXAMPLES = int(os.environ.get("VLARENA_FUZZ_EXAMPLES", "6"))
BUDGET_SECONDS = float(os.environ.get("VLARENA_FUZZ_SECONDS", "120"))
KEYS = {
    "owner": ("fuzz-owner-secret-0001", ["submit"], "fuzzers"),
    "stranger": ("fuzz-stranger-secret-02", ["submit"], None),
    "admin": ("fuzz-admin-secret-00003", ["admin"], None),
    "reader": ("fuzz-reader-secret-0004", ["read"], None),
}
CALLERS = [*KEYS, None, "unknown"]
# A server error is a 5xx the operation does not document: schemathesis' not_a_server_error
# also refuses the documented 503 that answers while no Triton replica serves a model.
CHECKS = {
    "server errors": not_a_server_error,
    "undocumented statuses": status_code_conformance,
    "schema violations": response_schema_conformance,
}
MODEL = "fuzz-jepa"
COLLECTION = "fuzz-catalogue"
LINK_SECRET = "fuzz-link-secret-0123456789abcdef"


@dataclass
class Tally:
    """What the fuzzer saw, over every operation (the summary line of `make fuzz`)."""

    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in CHECKS})

    def line(self) -> str:
        found = ", ".join(f"{len(v)} {k}" for k, v in self.failures.items())
        spread = " ".join(f"{s}:{n}" for s, n in sorted(self.statuses.items()))
        return f"fuzz: {self.cases} cases, {found} (statuses {spread})"


TALLY = Tally()


@dataclass
class Gateway:
    """The app under test, the client schemathesis calls it through, and the real ids."""

    app: Any
    client: asgi.ASGIClient
    ids: dict[str, str]


def _headers(who: str | None) -> dict[str, str]:
    if who is None:
        return {}
    secret = KEYS[who][0] if who in KEYS else "vlk_not-a-key-of-this-gateway"
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("fuzz")
    artifacts = root / "artifacts"
    artifacts.mkdir()
    settings = Settings(
        redis_url=redis_url,
        key_prefix=f"fuzz-{uuid.uuid4().hex[:8]}:",
        artifact_dir=artifacts,
        api_keys=[
            {"name": name, "key": key, "scopes": scopes, "team": team}  # type: ignore[list-item]
            for name, (key, scopes, team) in KEYS.items()
        ],
        # Followed streams of a job that never ends close soon.
        stream_idle_seconds=1,
        stream_max_seconds=2,
        link_secret=LINK_SECRET,
    )
    app = create_app(settings)
    # No Triton listens there: the inference routes answer 503.
    app.state.serving_settings = ServingSettings(
        triton_url=f"127.0.0.1:{free_port()}", triton_timeout_seconds=1, retry_after_seconds=1
    )
    with asgi.get_client(app) as client:
        spec = {
            "type": "train",
            "model": {"family": "vl-jepa", "config": {"preset": "tiny"}},
            "dataset": {"name": "emoji"},
            "budget": {"samples": 64},
            "modelName": MODEL,
        }
        job = client.post("/v1/jobs", json=spec, headers=_headers("owner"))
        assert job.status_code == 201, job.text
        finish_next_job(settings, job_workdir(root), MODEL)
        gateway = Gateway(app, client, {"job": job.json()["id"]})
        _ensure_collection(gateway)
        yield gateway
        asgi.shutdown_lifespans()


def _ensure_collection(gateway: Gateway) -> None:
    """The collection the fuzzer's path parameters name (it may delete it: then made again)."""
    body = {"name": COLLECTION, "model": MODEL, "version": 1}
    reply = gateway.client.post("/v1/collections", json=body, headers=_headers("owner"))
    assert reply.status_code in (201, 409), reply.text


def _real(case: Any, ids: dict[str, str]) -> None:
    """Points the case's path parameters, and the names of models, collections and jobs in its
    body, at existing objects; signs the links of the report routes."""
    params = case.path_parameters or {}
    path = case.operation.path
    expires = int(time.time()) + 3600
    signed = {"expires": expires, "sig": sign(LINK_SECRET.encode(), ids["job"], expires)}
    for name in params:
        if name == "job_id":
            params[name] = ids["job"]
        elif name == "name":
            params[name] = COLLECTION if path.startswith("/v1/collections") else MODEL
        elif name == "version":
            params[name] = 1
        elif name == "alias":
            params[name] = "production"
        elif name in signed:
            params[name] = signed[name]
        elif name == "path":
            params[name] = "report/report.html" if path.startswith("/v1/shared") else "metrics.json"
    if path == "/v1/jobs/{job_id}/report":
        case.query = (case.query or {}) | signed
    body = case.body if isinstance(case.body, dict) else {}
    if isinstance(body.get("model"), str):
        body["model"] = MODEL
    if "collection" in body:
        body["collection"] = COLLECTION
    source = body.get("source")
    if isinstance(source, dict) and "jobId" in source:
        source["jobId"] = ids["job"]


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def _run_operation(gateway: Gateway, operation: Any, mode: Any, examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(
        case=operation.as_strategy(generation_mode=mode),
        real=st.booleans(),
        who=st.sampled_from(CALLERS),
    )
    def fuzz(case: Any, real: bool, who: str | None) -> None:
        if real:
            _real(case, gateway.ids)
        # The caller's key replaces whatever the generated case sent as credentials.
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = headers | _headers(who)
        response = case.call(session=gateway.client)
        TALLY.cases += 1
        TALLY.statuses[response.status_code] += 1
        documented = case.operation.definition.raw.get("responses", {})
        for kind, check in CHECKS.items():
            if check is not_a_server_error and str(response.status_code) in documented:
                continue
            try:
                case.validate_response(response, checks=[check])
            except (AssertionError, BaseExceptionGroup) as exc:  # a failed check
                TALLY.failures[kind].append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]!r} ({str(exc).splitlines()[0][:200]})"
                )
        if case.method == "DELETE" and response.status_code == 204:
            _ensure_collection(gateway)
            _realias(gateway)

    try:
        fuzz()
    except Unsatisfiable:
        # An operation with nothing to get wrong (no parameters, no body) has no negative case.
        if mode is not schemathesis.GenerationMode.NEGATIVE:
            raise


def _realias(gateway: Gateway) -> None:
    body = {"alias": "production", "version": 1}
    gateway.client.post(f"/v1/models/{MODEL}/aliases", json=body, headers=_headers("admin"))


def test_the_api_answers_every_generated_request_as_its_document_says(gateway: Gateway) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", gateway.app)
    started = time.monotonic()
    for operation in _operations(schema):
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            within = time.monotonic() - started < BUDGET_SECONDS
            _run_operation(gateway, operation, mode, EXAMPLES if within else 1)
    summary = TALLY.line()
    print(f"\n{summary} in {time.monotonic() - started:.0f} s")
    found = {k: v[:5] for k, v in TALLY.failures.items() if v}
    assert not found, f"{summary}\n" + json.dumps(found, indent=1)
