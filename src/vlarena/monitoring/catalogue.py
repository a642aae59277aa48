"""The metrics vlarena's components export, by name: what dashboards and rules may query.

A test holds this list to what the gateway and worker modules really register, and the
integration test to what a real Triton serves. Names are metric family names as PromQL sees
them: a histogram `x` is queried as `x_bucket`, `x_sum` and `x_count` (see `series_names`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportedMetric:
    name: str
    kind: str  # counter, gauge or histogram
    component: str  # gateway, worker or triton


def _metrics(component: str, kind: str, *names: str) -> list[ExportedMetric]:
    return [ExportedMetric(name, kind, component) for name in names]


EXPORTED: tuple[ExportedMetric, ...] = (
    # vlarena.gateway.metrics: per request (multiprocess mode across uvicorn workers) ...
    *_metrics(
        "gateway",
        "counter",
        "vlarena_http_requests_total",
        "vlarena_jobs_submitted_total",
        "vlarena_triton_errors_total",
    ),
    *_metrics(
        "gateway",
        "histogram",
        "vlarena_http_request_duration_seconds",
        "vlarena_inference_duration_seconds",
    ),
    # ... and read from Redis at scrape time.
    *_metrics(
        "gateway",
        "gauge",
        "vlarena_http_requests_in_flight",
        "vlarena_jobs",
        "vlarena_queue_jobs",
        "vlarena_workers",
        "vlarena_redis_memory_used_bytes",
        "vlarena_redis_memory_max_bytes",
    ),
    # vlarena.worker.metrics: per worker process; the vlarena_job_* gauges come from Redis.
    *_metrics(
        "worker",
        "counter",
        "vlarena_worker_jobs_started_total",
        "vlarena_worker_jobs_ended_total",
        "vlarena_worker_samples_total",
        "vlarena_reaper_runnable_total",
    ),
    *_metrics(
        "worker",
        "histogram",
        "vlarena_worker_attempt_duration_seconds",
        "vlarena_worker_queue_wait_seconds",
    ),
    *_metrics(
        "worker",
        "gauge",
        "vlarena_worker_busy",
        "vlarena_job_training_loss",
        "vlarena_job_samples_per_second",
        "vlarena_job_samples_seen",
        "vlarena_job_progress_ratio",
    ),
    # Triton's own metrics port (per model and version; nv_gpu_* only with a GPU).
    *_metrics(
        "triton",
        "counter",
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
    ),
    *_metrics(
        "triton",
        "gauge",
        "nv_inference_pending_request_count",
        "nv_cpu_utilization",
        "nv_gpu_utilization",
        "nv_gpu_memory_used_bytes",
        "nv_gpu_memory_total_bytes",
    ),
)

# Metrics only a Triton with a GPU exports: no test here can scrape them, so `promtool test
# rules` cases cover the rules that use them instead, and the scrape test leaves them out.
GPU_ONLY_PREFIX = "nv_gpu_"


def needs_gpu(name: str) -> bool:
    return name.startswith(GPU_ONLY_PREFIX)


def series_names() -> dict[str, ExportedMetric]:
    """Every name a query may use, histogram series (`_bucket`, `_sum`, `_count`) included."""
    names = {}
    for metric in EXPORTED:
        suffixes = ("_bucket", "_sum", "_count") if metric.kind == "histogram" else ("",)
        for suffix in suffixes:
            names[metric.name + suffix] = metric
    return names
