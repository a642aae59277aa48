"""The gateway's Prometheus metrics: per-request and inference series, and job gauges from Redis.

Per-request counters, histograms and the in-flight gauge live in each uvicorn worker process.
When the gateway runs several processes, `vlarena gateway` points `PROMETHEUS_MULTIPROC_DIR` at a
directory they share (prometheus_client's multiprocess mode) and `/metrics` sums every process's
files, so any process answers for all. Job and queue gauges are read from Redis at scrape time,
so they are the same whichever process (or gateway replica) is scraped: aggregate them with `max`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# A `_created` timestamp per counter and histogram child doubles the series and says nothing
# Prometheus does not already know.
disable_created_metrics()

HTTP_REQUESTS = Counter(
    "vlarena_http_requests_total",
    "HTTP requests the gateway answered, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "vlarena_http_request_duration_seconds",
    "Time to answer an HTTP request (to its end, for streams), by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_IN_FLIGHT = Gauge(
    "vlarena_http_requests_in_flight",
    "HTTP requests the gateway is answering now (streams included).",
    multiprocess_mode="livesum",
)
JOBS_SUBMITTED = Counter(
    "vlarena_jobs_submitted_total", "Jobs created through the API, by type.", ["type"]
)
INFERENCE_DURATION = Histogram(
    "vlarena_inference_duration_seconds",
    "Time an inference route spent on its model (Triton calls and the pipeline around them), "
    "by registered model and endpoint; failed calls included.",
    ["model", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
TRITON_ERRORS = Counter(
    "vlarena_triton_errors_total",
    "Inference calls Triton did not answer: `unavailable` (down, slow, model not loaded; the "
    "API says 503) or `failed` (Triton rejected the request; 502), by model and endpoint.",
    ["model", "endpoint", "reason"],
)


class _JobGauges(Collector):
    """Gauges from one read of the job store's counts."""

    def __init__(self, counts: dict[str, Any]) -> None:
        self.counts = counts

    def describe(self) -> Iterable[Metric]:
        return _JobGauges({"jobs": {}, "waiting": {}, "workers": {}, "memory": {}}).collect()

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily(
            "vlarena_jobs", "Jobs by state and type (from Redis).", labels=["state", "type"]
        )
        for (state, job_type), value in self.counts["jobs"].items():
            jobs.add_metric([state, job_type], value)
        waiting = GaugeMetricFamily(
            "vlarena_queue_jobs",
            "Jobs waiting for a worker, by queue (from Redis).",
            labels=["queue"],
        )
        for queue, value in self.counts["waiting"].items():
            waiting.add_metric([queue], value)
        workers = GaugeMetricFamily(
            "vlarena_workers",
            "Workers that sent a heartbeat recently, by queue they take jobs from (from Redis).",
            labels=["queue"],
        )
        for queue, value in self.counts["workers"].items():
            workers.add_metric([queue], value)
        memory = self.counts["memory"]
        used = GaugeMetricFamily(
            "vlarena_redis_memory_used_bytes", "Memory Redis uses (`used_memory`)."
        )
        limit = GaugeMetricFamily(
            "vlarena_redis_memory_max_bytes",
            "Redis's `maxmemory`, past which it refuses writes (0: unbounded).",
        )
        if memory:
            used.add_metric([], memory["used"])
            limit.add_metric([], memory["max"])
        yield from (jobs, waiting, workers, used, limit)


def render_metrics(counts: dict[str, Any] | None) -> tuple[bytes, str]:
    """The exposition text: this process's (or all processes') series plus the job gauges."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    if counts is not None:
        gauges = CollectorRegistry()
        gauges.register(_JobGauges(counts))
        body += generate_latest(gauges)
    return body, CONTENT_TYPE_LATEST
