"""The worker's Prometheus metrics, served on `VLARENA_WORKER_METRICS_PORT` when set."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ATTEMPTS = Counter(
    "vlarena_worker_attempts_total",
    "Job attempts this worker ended, by job type and outcome.",
    ["type", "outcome"],
)
ATTEMPT_DURATION = Histogram(
    "vlarena_worker_attempt_duration_seconds",
    "Wall time of one job attempt on this worker, by job type.",
    ["type"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
SAMPLES = Counter(
    "vlarena_worker_samples_total", "Training samples this worker processed, by job type.", ["type"]
)
BUSY = Gauge("vlarena_worker_busy", "1 while this worker runs a job attempt, else 0.")
REAPED = Counter(
    "vlarena_reaper_runnable_total",
    "Jobs this worker's reaper made runnable again (lease lapsed or retry backoff over).",
)
