"""Log lines are JSON objects carrying the request and job ids; the gateway hands out request ids."""

from __future__ import annotations

import gc
import io
import json
import logging

from fastapi.testclient import TestClient

from vlarena.gateway.app import create_app
from vlarena.json_logs import REQUEST_ID, JsonFormatter, job_context
from vlarena.settings import Settings


def _logged(emit) -> list[dict]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("vlarena.test-json-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_carry_request_and_job_ids_when_known() -> None:
    def emit(logger: logging.Logger) -> None:
        logger.info("plain")
        token = REQUEST_ID.set("req-1")
        try:
            with job_context("job-1"):
                logger.warning("inside %s", "both")
        finally:
            REQUEST_ID.reset(token)
        logger.info("submitted", extra={"job_id": "job-2"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")

    plain, inside, submitted, failed = _logged(emit)
    assert plain["message"] == "plain" and "job_id" not in plain and "request_id" not in plain
    assert inside["request_id"] == "req-1" and inside["job_id"] == "job-1"
    assert inside["level"] == "warning" and inside["message"] == "inside both"
    assert submitted["job_id"] == "job-2"
    assert "ValueError: boom" in failed["exc_info"]


def test_gateway_answers_with_a_request_id(redis_url: str) -> None:
    app = create_app(Settings(redis_url=redis_url, auth_disabled=True))
    with TestClient(app) as client:
        first = client.get("/healthz").headers["x-request-id"]
        second = client.get("/healthz").headers["x-request-id"]
        assert len(first) == 16 and first != second
        given = client.get("/healthz", headers={"X-Request-ID": "trace-42"})
        assert given.headers["x-request-id"] == "trace-42"
        forged = client.get("/healthz", headers={"X-Request-ID": 'x", "level": "error'})
        assert forged.headers["x-request-id"] != 'x", "level": "error'
        assert len(forged.headers["x-request-id"]) == 16


def test_gateway_keeps_its_startup_objects_out_of_full_collections(redis_url: str) -> None:
    app = create_app(Settings(redis_url=redis_url, auth_disabled=True))
    with TestClient(app):
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0  # shut down: collectable again
