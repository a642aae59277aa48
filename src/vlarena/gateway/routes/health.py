"""/healthz, /readyz and /metrics: liveness, readiness (Redis reachable) and Prometheus."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from vlarena.gateway.deps import StoreDep
from vlarena.gateway.metrics import render_metrics
from vlarena.gateway.observe import TALLY
from vlarena.gateway.schemas import Health, Readiness, example_response

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness", responses={200: example_response({"status": "ok"})})
async def healthz() -> Health:
    """The process serves requests; says nothing about Redis."""
    return Health()


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=Readiness,
    responses={
        200: example_response({"status": "ready", "checks": {"redis": "ok"}}),
        503: example_response(
            {"status": "unavailable", "checks": {"redis": "ConnectionError: ..."}},
            "Redis is unreachable.",
        ),
    },
)
async def readyz(store: StoreDep) -> JSONResponse:
    """Ready when Redis answers a PING; 503 otherwise, so no traffic reaches this replica."""
    try:
        await store.ping()
    except Exception as exc:
        checks = {"redis": f"{type(exc).__name__}: {exc}"}
        return JSONResponse({"status": "unavailable", "checks": checks}, status_code=503)
    return JSONResponse({"status": "ready", "checks": {"redis": "ok"}})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {
                "text/plain": {
                    "example": 'vlarena_http_requests_total{method="GET",route="/v1/jobs/{job_id}",'
                    'status="200"} 1024.0\nvlarena_jobs{state="RUNNING",type="train"} 2.0\n'
                }
            },
        }
    },
)
async def metrics(store: StoreDep) -> Response:
    """Requests by route, method and status; latency histograms; jobs by state; queue depth."""
    try:
        counts = await store.counts()
    except Exception:
        log.warning("job gauges left out of /metrics: Redis unreachable", exc_info=True)
        counts = None
    TALLY.flush()  # this process's requests up to now; the others' up to their last second
    body, content_type = render_metrics(counts)
    return Response(body, media_type=content_type)
