"""A real Prometheus scraping a real gateway, worker and Triton through a train job and inference:
every dashboard panel and every rule gets data back, and every catalogued metric arrives from
the component that exports it."""

from __future__ import annotations

import json
import math

import pytest
from scraped_platform import MODEL, ScrapedPlatform

from vlarena.monitoring.catalogue import needs_gpu, series_names
from vlarena.monitoring.dashboards import DASHBOARDS, substitute
from vlarena.monitoring.prometheus import GATEWAY_JOB, TRITON_JOB, WORKER_JOB
from vlarena.monitoring.promql import metric_names
from vlarena.monitoring.rules import ALERTS, RECORDINGS

pytestmark = pytest.mark.slow
JOB_OF = {"gateway": GATEWAY_JOB, "worker": WORKER_JOB, "triton": TRITON_JOB}


def _needs_gpu(expr: str) -> bool:
    return any(needs_gpu(name) for name in metric_names(expr))


def _series(platform: ScrapedPlatform, expr: str) -> list[dict]:
    answer = platform.query_range(expr)
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def _last(platform: ScrapedPlatform, expr: str) -> float:
    (series,) = _series(platform, expr)
    return float(series["values"][-1][1])


def test_every_dashboard_panel_gets_data(scraped_platform: ScrapedPlatform) -> None:
    empty = []
    for dashboard in DASHBOARDS:
        for panel in dashboard.panels:
            for query in panel.queries:
                if _needs_gpu(query.expr):
                    continue
                if not _series(scraped_platform, substitute(query.expr, "5s")):
                    empty.append(f"{dashboard.uid} / {panel.title}: {query.expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_every_rule_gets_data(scraped_platform: ScrapedPlatform) -> None:
    empty = []
    for recording in RECORDINGS:
        for expr in (recording.expr, recording.record):
            if not _series(scraped_platform, expr):
                empty.append(expr)
    for alert in ALERTS:
        # The whole expression is valid and evaluates (it fires only past its thresholds) ...
        _series(scraped_platform, alert.expr)
        # ... and what each condition compares has data.
        for condition in alert.conditions:
            if not _needs_gpu(condition.query) and not _series(scraped_platform, condition.query):
                empty.append(f"{alert.name}: {condition.query}")
    assert not empty, "rules without data:\n" + "\n".join(empty)


def test_every_catalogued_metric_comes_from_its_component(
    scraped_platform: ScrapedPlatform,
) -> None:
    found = {
        (s["metric"]["__name__"], s["metric"]["job"])
        for s in _series(
            scraped_platform, 'count by (__name__, job) ({__name__=~"(vlarena|nv)_.+"})'
        )
    }
    missing = [
        (name, JOB_OF[metric.component])
        for name, metric in series_names().items()
        if not needs_gpu(name) and (name, JOB_OF[metric.component]) not in found
    ]
    assert not missing
    assert not any(needs_gpu(name) for name, _ in found), "this Triton runs without a GPU"


def test_running_job_gauges_show_the_job_and_vanish_when_it_ends(
    scraped_platform: ScrapedPlatform,
) -> None:
    job = scraped_platform.job
    (loss,) = _series(scraped_platform, "vlarena_job_training_loss")
    assert loss["metric"]["job_id"] == job["id"]
    assert loss["metric"]["type"] == "train"
    assert all(math.isfinite(float(v)) and float(v) > 0 for _, v in loss["values"])
    (seen,) = _series(scraped_platform, "vlarena_job_samples_seen")
    assert 0 < float(seen["values"][-1][1]) <= 640
    (ratio,) = _series(scraped_platform, "vlarena_job_progress_ratio")
    assert 0 < float(ratio["values"][-1][1]) <= 1
    # The job ended: its series went with it.
    assert scraped_platform.query("vlarena_job_training_loss")["data"]["result"] == []


def test_worker_counts_the_attempt(scraped_platform: ScrapedPlatform) -> None:
    assert _last(scraped_platform, 'vlarena_worker_jobs_started_total{type="train"}') == 1
    ended = 'vlarena_worker_jobs_ended_total{type="train",outcome="succeeded"}'
    assert _last(scraped_platform, ended) == 1
    assert _last(scraped_platform, "vlarena_worker_queue_wait_seconds_count") == 1
    assert _last(scraped_platform, "vlarena_worker_attempt_duration_seconds_count") == 1
    assert _last(scraped_platform, 'vlarena_worker_samples_total{type="train"}') > 0
    assert _last(scraped_platform, "vlarena_worker_busy") == 0


def test_gateway_counts_across_its_processes_and_inference(
    scraped_platform: ScrapedPlatform,
) -> None:
    assert scraped_platform.caption_statuses == [503, 200, 200, 200]
    # Two uvicorn processes answer the scrapes in turn: in multiprocess mode each answers for
    # both, so the count of the one submission never drops back once it appeared.
    (submitted,) = _series(scraped_platform, 'vlarena_jobs_submitted_total{type="train"}')
    assert {v for _, v in submitted["values"]} == {"1"}
    errors = f'vlarena_triton_errors_total{{model="{MODEL}",endpoint="caption"}}'
    (error,) = _series(scraped_platform, errors)
    assert error["metric"]["reason"] == "unavailable"
    assert float(error["values"][-1][1]) == 1
    calls = f'vlarena_inference_duration_seconds_count{{model="{MODEL}",endpoint="caption"}}'
    assert _last(scraped_platform, calls) == 4
    failed = 'vlarena_http_requests_total{route="/v1/caption",status="503"}'
    assert _last(scraped_platform, failed) == 1
    served = f'sum(nv_inference_request_success{{model=~"{MODEL}.*"}})'
    assert _last(scraped_platform, served) >= 3


def _json_lines(path) -> list[dict]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_gateway_and_worker_log_json_with_request_and_job_ids(
    scraped_platform: ScrapedPlatform,
) -> None:
    job_id = scraped_platform.job["id"]
    gateway = _json_lines(scraped_platform.logs / "gateway-1.log")
    submitted = [e for e in gateway if e.get("job_id") == job_id]
    assert submitted and all(len(e["request_id"]) == 16 for e in submitted)
    worker = _json_lines(scraped_platform.logs / "worker-1.log")
    assert any(e.get("job_id") == job_id and "starts" in e["message"] for e in worker)
    assert {"time", "level", "logger", "message"} <= set(worker[0])
