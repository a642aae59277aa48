"""vlarena's Grafana dashboards, written to `monitoring/grafana/<uid>.json`.

Compose mounts that folder into Grafana's provisioning; the chart ships a copy as ConfigMaps
labelled `grafana_dashboard: "1"`. Queries use `$__rate_interval` and regex matchers on the
dashboard's variables (`=~"$var"`, All = `.*`), so the scrape test can substitute them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vlarena.monitoring.rules import STREAM_ROUTES

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""


@dataclass(frozen=True)
class Variable:
    """A query variable listing the values of `label` on `metric`."""

    name: str
    label: str
    metric: str

    def definition(self) -> str:
        return f"label_values({self.metric}, {self.label})"


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = field(default_factory=tuple)

    def queries(self) -> list[str]:
        """Every PromQL expression of the dashboard's panels."""
        return [q.expr for p in self.panels for q in p.queries]

    def json(self) -> dict[str, Any]:
        panels = []
        for i, panel in enumerate(self.panels):
            panels.append(
                {
                    "id": i + 1,
                    "type": "timeseries",
                    "title": panel.title,
                    "description": panel.description,
                    "datasource": DATASOURCE,
                    "gridPos": {"x": 12 * (i % 2), "y": 8 * (i // 2), "w": 12, "h": 8},
                    "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                    "options": {
                        "legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi", "sort": "desc"},
                    },
                    "targets": [
                        {
                            "refId": chr(ord("A") + k),
                            "datasource": DATASOURCE,
                            "expr": q.expr,
                            "legendFormat": q.legend or "__auto",
                        }
                        for k, q in enumerate(panel.queries)
                    ],
                }
            )
        variables: list[dict[str, Any]] = [
            {
                "name": "datasource",
                "label": "Prometheus",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
            }
        ]
        for v in self.variables:
            variables.append(
                {
                    "name": v.name,
                    "label": v.name,
                    "type": "query",
                    "datasource": DATASOURCE,
                    "definition": v.definition(),
                    "query": {"query": v.definition(), "refId": v.name},
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "sort": 1,
                    "hide": 0,
                }
            )
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["vlarena"],
            "editable": False,
            "schemaVersion": 39,
            "version": 1,
            "timezone": "browser",
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": variables},
            "annotations": {"list": []},
            "panels": panels,
        }


def _quantiles(metric: str, by: str, selector: str = "", qs: tuple[float, ...] = (0.5, 0.99)):
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{selector}[{RATE}])))",
            f"p{round(q * 100)} " + " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",")),
        )
        for q in qs
    )


API = Dashboard(
    "vlarena-api",
    "vlarena API",
    "The gateway: requests, latency, errors, inference through Triton.",
    (
        Panel(
            "Requests by route",
            (
                Query(
                    f"sum by (route) (rate(vlarena_http_requests_total[{RATE}]))",
                    "{{route}}",
                ),
            ),
            "reqps",
        ),
        Panel(
            "Responses by status",
            (
                Query(
                    f"sum by (status) (rate(vlarena_http_requests_total[{RATE}]))",
                    "{{status}}",
                ),
            ),
            "reqps",
        ),
        Panel(
            "5xx ratio (5 min)",
            (Query("vlarena:http_requests_5xx:ratio_rate5m", "5xx"),),
            "percentunit",
            "Alert VlarenaGatewayErrorRatioHigh fires above 5%.",
        ),
        Panel(
            "Latency by route",
            _quantiles(
                "vlarena_http_request_duration_seconds", "route", f'{{route!~"{STREAM_ROUTES}"}}'
            ),
            "s",
            "Log and event streams are left out: they last as long as their client listens.",
        ),
        Panel(
            "Requests in flight",
            (Query("sum(vlarena_http_requests_in_flight)", "in flight"),),
        ),
        Panel(
            "Jobs submitted by type",
            (
                Query(
                    f"sum by (type) (rate(vlarena_jobs_submitted_total[{RATE}]))",
                    "{{type}}",
                ),
            ),
            "ops",
        ),
        Panel(
            "Inference latency by model and endpoint",
            _quantiles(
                "vlarena_inference_duration_seconds",
                "model, endpoint",
                '{model=~"$model"}',
                (0.5, 0.95),
            ),
            "s",
            "Time the gateway spent on the model: Triton calls plus the pipeline around them.",
        ),
        Panel(
            "Inference calls by model and endpoint",
            (
                Query(
                    "sum by (model, endpoint) "
                    f'(rate(vlarena_inference_duration_seconds_count{{model=~"$model"}}[{RATE}]))',
                    "{{model}} {{endpoint}}",
                ),
            ),
            "ops",
        ),
        Panel(
            "Triton errors seen by the gateway",
            (
                Query(
                    "sum by (model, endpoint, reason) "
                    f'(rate(vlarena_triton_errors_total{{model=~"$model"}}[{RATE}]))',
                    "{{model}} {{endpoint}} {{reason}}",
                ),
            ),
            "ops",
            "unavailable: Triton down, slow, or the model not loaded (503); failed: rejected (502).",
        ),
    ),
    (Variable("model", "model", "vlarena_inference_duration_seconds_count"),),
)

JOBS = Dashboard(
    "vlarena-jobs",
    "vlarena jobs and training",
    "Jobs by state, the loss and throughput of every running job, outcomes and durations.",
    (
        Panel(
            "Active jobs by state",
            (
                Query(
                    "sum by (state) (max by (state, type) "
                    '(vlarena_jobs{state=~"QUEUED|RUNNING|RETRYING|CANCELLING"}))',
                    "{{state}}",
                ),
            ),
        ),
        Panel(
            "Training loss of running jobs",
            (
                Query(
                    'max by (job_id, run) (vlarena_job_training_loss{job_id=~"$job_id"})',
                    "{{job_id}} {{run}}",
                ),
            ),
            "short",
            "One curve per running job (and per run of a compare job); it ends with the job.",
        ),
        Panel(
            "Throughput of running jobs",
            (
                Query(
                    'max by (job_id, run) (vlarena_job_samples_per_second{job_id=~"$job_id"})',
                    "{{job_id}} {{run}}",
                ),
            ),
            "short",
            "Training samples per second.",
        ),
        Panel(
            "Progress of running jobs",
            (
                Query(
                    'max by (job_id) (vlarena_job_progress_ratio{job_id=~"$job_id"})',
                    "{{job_id}}",
                ),
            ),
            "percentunit",
        ),
        Panel(
            "Samples seen by running jobs",
            (
                Query(
                    'max by (job_id) (vlarena_job_samples_seen{job_id=~"$job_id"})',
                    "{{job_id}}",
                ),
            ),
        ),
        Panel(
            "Attempts ended by outcome",
            (
                Query(
                    f"sum by (type, outcome) (rate(vlarena_worker_jobs_ended_total[{RATE}]))",
                    "{{type}} {{outcome}}",
                ),
            ),
            "ops",
            "failed: the job failed for good; retried: it runs again from its last checkpoint.",
        ),
        Panel(
            "Job failure ratio (1 h)",
            (Query("vlarena:worker_jobs_failed:ratio_rate1h", "failed"),),
            "percentunit",
            "Alert VlarenaJobFailureRatioHigh fires above 25%.",
        ),
        Panel(
            "Attempt duration",
            _quantiles("vlarena_worker_attempt_duration_seconds", "type", qs=(0.5, 0.95)),
            "s",
        ),
    ),
    (Variable("job_id", "job_id", "vlarena_job_training_loss"),),
)

SERVING = Dashboard(
    "vlarena-serving",
    "vlarena serving (Triton)",
    "Triton's own metrics per served graph: traffic, queue and compute time, batching, GPU.",
    (
        Panel(
            "Inferences by model",
            (
                Query(
                    "sum by (model) "
                    f'(rate(nv_inference_request_success{{model=~"$triton_model"}}[{RATE}]))',
                    "{{model}}",
                ),
            ),
            "reqps",
        ),
        Panel(
            "Failed inferences by model",
            (
                Query(
                    "sum by (model) "
                    f'(rate(nv_inference_request_failure{{model=~"$triton_model"}}[{RATE}]))',
                    "{{model}}",
                ),
            ),
            "reqps",
        ),
        Panel(
            "Time per request: in queue and in all",
            tuple(
                Query(
                    "sum by (model) "
                    f'(rate(nv_inference_{part}_duration_us{{model=~"$triton_model"}}[{RATE}]))\n'
                    "/ sum by (model) "
                    f'(rate(nv_inference_request_success{{model=~"$triton_model"}}[{RATE}]))'
                    " / 1e6",
                    f"{{{{model}}}} {part}",
                )
                for part in ("queue", "request")
            ),
            "s",
            "Alert VlarenaTritonQueueTimeHigh fires when queue time is above 100 ms (5 min "
            "average).",
        ),
        Panel(
            "Compute time per inference",
            (
                Query(
                    "sum by (model) (rate(nv_inference_compute_infer_duration_us"
                    f'{{model=~"$triton_model"}}[{RATE}]))\n'
                    "/ sum by (model) "
                    f'(rate(nv_inference_count{{model=~"$triton_model"}}[{RATE}])) / 1e6',
                    "{{model}}",
                ),
            ),
            "s",
        ),
        Panel(
            "Average batch size",
            (
                Query(
                    "sum by (model) "
                    f'(rate(nv_inference_count{{model=~"$triton_model"}}[{RATE}]))\n'
                    "/ sum by (model) "
                    f'(rate(nv_inference_exec_count{{model=~"$triton_model"}}[{RATE}]))',
                    "{{model}}",
                ),
            ),
            "short",
            "Inferences per model execution: above 1 when dynamic batching groups requests.",
        ),
        Panel(
            "Pending requests",
            (
                Query(
                    'sum by (model) (nv_inference_pending_request_count{model=~"$triton_model"})',
                    "{{model}}",
                ),
            ),
        ),
        Panel(
            "GPU utilisation",
            (Query("avg by (instance, gpu_uuid) (nv_gpu_utilization)", "{{instance}}"),),
            "percentunit",
            "Only Triton replicas with a GPU report it.",
        ),
        Panel(
            "GPU memory used",
            (
                Query(
                    "sum by (instance) (nv_gpu_memory_used_bytes)\n"
                    "/ sum by (instance) (nv_gpu_memory_total_bytes)",
                    "{{instance}}",
                ),
            ),
            "percentunit",
        ),
        Panel(
            "Triton CPU utilisation",
            (Query("avg by (instance) (nv_cpu_utilization)", "{{instance}}"),),
            "percentunit",
        ),
        Panel(
            "Gateway inference latency by endpoint",
            _quantiles("vlarena_inference_duration_seconds", "endpoint", qs=(0.5, 0.95)),
            "s",
            "End to end from the gateway: every Triton call of a request and the numpy around.",
        ),
    ),
    (Variable("triton_model", "model", "nv_inference_request_success"),),
)

WORKERS = Dashboard(
    "vlarena-workers",
    "vlarena workers and queues",
    "Job queues, live and busy workers, what the workers do, the reaper.",
    (
        Panel(
            "Jobs waiting by queue",
            (Query('queue:vlarena_queue_jobs:max{queue=~"$queue"}', "{{queue}}"),),
        ),
        Panel(
            "Live workers by queue",
            (Query('queue:vlarena_workers:max{queue=~"$queue"}', "{{queue}}"),),
            "short",
            "Workers whose heartbeat reached Redis recently.",
        ),
        Panel(
            "Busy workers",
            (Query("sum(vlarena_worker_busy)", "busy"),),
        ),
        Panel(
            "Attempts started by type",
            (
                Query(
                    f"sum by (type) (rate(vlarena_worker_jobs_started_total[{RATE}]))",
                    "{{type}}",
                ),
            ),
            "ops",
        ),
        Panel(
            "Queue wait",
            _quantiles("vlarena_worker_queue_wait_seconds", "type", qs=(0.5, 0.95)),
            "s",
            "From submission (or the previous attempt's end) to the start of an attempt.",
        ),
        Panel(
            "Training samples by job type",
            (
                Query(
                    f"sum by (type) (rate(vlarena_worker_samples_total[{RATE}]))",
                    "{{type}}",
                ),
            ),
            "short",
        ),
        Panel(
            "Jobs the reaper made runnable",
            (Query(f"sum(rate(vlarena_reaper_runnable_total[{RATE}]))", "runnable"),),
            "ops",
            "Lapsed leases (a worker died) and retries whose backoff ended.",
        ),
    ),
    (Variable("queue", "queue", "vlarena_queue_jobs"),),
)

DASHBOARDS: tuple[Dashboard, ...] = (API, JOBS, SERVING, WORKERS)

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def substitute(expr: str, rate_interval: str) -> str:
    """`expr` as Grafana sends it with every variable at All: `$__rate_interval` given, the
    dashboard's variables `.*`."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return rate_interval if name == "__rate_interval" else ".*"

    return _VARIABLE.sub(value, expr)
