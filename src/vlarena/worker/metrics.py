"""The worker's Prometheus metrics, served on `VLARENA_WORKER_METRICS_PORT` when set.

A worker is one process (Celery's solo pool), so each serves its own registry and Prometheus
scrapes every worker (pod or compose replica) on its own: no multiprocess mode here. The gauges of
the running job are read from the job's record in Redis at scrape time (`RunningJobGauges`), so
they vanish when the job ends and no finished job leaves a series behind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from vlarena.jobs.records import JobRecord

log = logging.getLogger(__name__)

# A `_created` timestamp per counter and histogram child doubles the series and says nothing
# Prometheus does not already know.
disable_created_metrics()

JOBS_STARTED = Counter(
    "vlarena_worker_jobs_started_total", "Job attempts this worker started, by job type.", ["type"]
)
JOBS_ENDED = Counter(
    "vlarena_worker_jobs_ended_total",
    "Job attempts this worker ended, by job type and what became of the job: succeeded, failed "
    "(for good), cancelled, retried (it runs again) or fenced (its lease was lost).",
    ["type", "outcome"],
)
ATTEMPT_DURATION = Histogram(
    "vlarena_worker_attempt_duration_seconds",
    "Wall time of one job attempt on this worker, by job type.",
    ["type"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
QUEUE_WAIT = Histogram(
    "vlarena_worker_queue_wait_seconds",
    "Time a job waited before this worker started it: since it was submitted, or since its "
    "previous attempt ended (retry backoff included), by job type.",
    ["type"],
    buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 1800, 3600, 14400),
)
SAMPLES = Counter(
    "vlarena_worker_samples_total", "Training samples this worker processed, by job type.", ["type"]
)
BUSY = Gauge("vlarena_worker_busy", "1 while this worker runs a job attempt, else 0.")
REAPED = Counter(
    "vlarena_reaper_runnable_total",
    "Jobs this worker's reaper made runnable again (lease lapsed or retry backoff over).",
)


def job_started(record: JobRecord, attempt: int) -> None:
    """Counts the start of `attempt` of a job and how long the job waited for it."""
    JOBS_STARTED.labels(record.type).inc()
    by_number = {a.number: a for a in record.attempts}
    current = by_number.get(attempt)
    if current is None:
        return
    previous = by_number.get(attempt - 1)
    since = previous.finished_at if previous and previous.finished_at else record.created_at
    wait = (current.started_at - since).total_seconds()
    QUEUE_WAIT.labels(record.type).observe(max(wait, 0.0))


def job_ended(job_type: str, outcome: str, job_state: str | None) -> None:
    """Counts the end of an attempt by the state it left the job in (`retried`: the job runs
    again), or as `fenced` when the attempt had lost its lease and recorded nothing."""
    if outcome != "fenced" and job_state:
        outcome = "retried" if job_state == "RETRYING" else job_state.lower()
    JOBS_ENDED.labels(job_type, outcome).inc()


# Gauge name, help, and the progress field it shows.
RUNNING_JOB_GAUGES: tuple[tuple[str, str, str], ...] = (
    (
        "vlarena_job_training_loss",
        "Training loss at the last progress event of the job this worker runs.",
        "loss",
    ),
    (
        "vlarena_job_samples_per_second",
        "Training throughput (samples/s) of the job this worker runs.",
        "samplesPerSecond",
    ),
    (
        "vlarena_job_samples_seen",
        "Samples the job this worker runs has trained on (every run of a compare job).",
        "samplesSeen",
    ),
    (
        "vlarena_job_progress_ratio",
        "Fraction of its sample budget the job this worker runs has done (0 to 1).",
        "percent",
    ),
)
RUNNING_JOB_LABELS = ["job_id", "type", "run"]


class RunningJobGauges(Collector):
    """Gauges of the job this worker runs, read from its record in Redis at each scrape.

    `read_job` returns the running job's stored hash (or None when the worker is idle); labels
    are the job id, its type and the run of a compare job (`vl-jepa seed 0`), so there is at most
    one series per gauge per worker.
    """

    def __init__(self, read_job: Callable[[], dict[str, str] | None]) -> None:
        self.read_job = read_job

    def describe(self) -> Iterable[Metric]:
        return self._families({}, {})

    def collect(self) -> Iterable[Metric]:
        try:
            fields = self.read_job()
        except Exception:
            log.warning("running-job gauges left out of /metrics: Redis unreachable", exc_info=True)
            fields = None
        if not fields or not fields.get("progress"):
            return self._families({}, {})
        progress = json.loads(fields["progress"])
        return self._families(progress, fields)

    @staticmethod
    def _families(progress: dict[str, Any], fields: dict[str, str]) -> list[Metric]:
        families: list[Metric] = []
        labels = [fields.get("id", ""), fields.get("type", ""), str(progress.get("run") or "")]
        for name, documentation, field in RUNNING_JOB_GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=RUNNING_JOB_LABELS)
            value = progress.get(field)
            if isinstance(value, int | float):
                family.add_metric(labels, value / 100 if field == "percent" else value)
            families.append(family)
        return families
