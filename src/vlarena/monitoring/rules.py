"""vlarena's recording and alert rules, written to `monitoring/rules/vlarena.yml`.

An alert is a list of conditions, each a query and a comparison: the query alone returns data
whenever the metrics it reads exist (the scrape test checks that), the comparison makes it fire.
Every alert has `promtool test rules` cases in `monitoring/tests/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

RULES_FILE = "vlarena.yml"
# Streams (`/logs`, `/events` with follow) last as long as the client listens: not latency.
STREAM_ROUTES = ".*/(logs|events)"


@dataclass(frozen=True)
class Recording:
    record: str
    expr: str


@dataclass(frozen=True)
class Condition:
    query: str
    comparison: str
    # How the condition joins the one before it (`and`, `and on (queue)`).
    join: str = "and"

    def expr(self) -> str:
        query = self.query
        if re.search(r"\s(or|and|unless)\s", query):
            query = f"({query})"
        return f"{query} {self.comparison}"


@dataclass(frozen=True)
class Alert:
    name: str
    conditions: tuple[Condition, ...]
    duration: str
    severity: str
    summary: str
    description: str
    runbook: str

    @property
    def expr(self) -> str:
        parts = [self.conditions[0].expr()]
        parts += [f"{c.join} {c.expr()}" for c in self.conditions[1:]]
        return "\n".join(parts)

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.duration,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook": self.runbook,
            },
        }


RECORDINGS: tuple[Recording, ...] = (
    Recording(
        "vlarena:http_requests_5xx:ratio_rate5m",
        '(sum(rate(vlarena_http_requests_total{status=~"5.."}[5m])) or vector(0))\n'
        "/ sum(rate(vlarena_http_requests_total[5m]))",
    ),
    Recording(
        "route:vlarena_http_request_duration_seconds:p99_rate5m",
        "histogram_quantile(0.99, sum by (le, route) (rate("
        f'vlarena_http_request_duration_seconds_bucket{{route!~"{STREAM_ROUTES}"}}[5m])))',
    ),
    # Every gateway replica reads the same numbers from Redis: one value per queue.
    Recording("queue:vlarena_queue_jobs:max", "max by (queue) (vlarena_queue_jobs)"),
    Recording("queue:vlarena_workers:max", "max by (queue) (vlarena_workers)"),
    # Every gateway replica reads the same Redis; no ratio while maxmemory is unbounded (0).
    Recording(
        "vlarena:redis_memory_used:ratio",
        "max(vlarena_redis_memory_used_bytes) / (max(vlarena_redis_memory_max_bytes) > 0)",
    ),
    Recording(
        "vlarena:worker_jobs_failed:ratio_rate1h",
        '(sum(rate(vlarena_worker_jobs_ended_total{outcome="failed"}[1h])) or vector(0))\n'
        '/ sum(rate(vlarena_worker_jobs_ended_total{outcome=~"succeeded|failed"}[1h]))',
    ),
    Recording(
        "model:nv_inference_queue_duration_seconds:avg_rate5m",
        "sum by (model) (rate(nv_inference_queue_duration_us[5m]))\n"
        "/ sum by (model) (rate(nv_inference_request_success[5m])) / 1e6",
    ),
)

ALERTS: tuple[Alert, ...] = (
    Alert(
        "VlarenaRedisMemoryHigh",
        (Condition("vlarena:redis_memory_used:ratio", "> 0.8"),),
        "5m",
        "warning",
        "Redis uses more than 80% of its maxmemory",
        "Redis uses {{ $value | humanizePercentage }} of its maxmemory; past it, every write "
        "(submitting, finishing, logging) is refused and the API answers 503.",
        "Look for what grows with `redis-cli --bigkeys` (vlarena:job:*:logs streams are capped "
        "at VLARENA_LOG_MAX_ENTRIES per job). Shorten the retention of finished jobs "
        "(VLARENA_JOB_RETENTION_SECONDS, chart: jobRetentionSeconds) or raise Redis's memory "
        "limit together with its maxmemory (redis.resources.limits.memory, redis.maxmemory).",
    ),
    Alert(
        "VlarenaGatewayErrorRatioHigh",
        (Condition("vlarena:http_requests_5xx:ratio_rate5m", "> 0.05"),),
        "5m",
        "critical",
        "More than 5% of API requests fail with 5xx",
        "{{ $value | humanizePercentage }} of the gateway's answers were 5xx over 5 minutes.",
        "Break vlarena_http_requests_total down by route and status on the vlarena API "
        "dashboard. 503 on inference routes: Triton is down or the model is not loaded (check "
        "triton-sync's logs, `vlarena models versions NAME`). 500: search the gateway's JSON "
        "logs for level=error and follow its request_id. /readyz 503: Redis is unreachable.",
    ),
    Alert(
        "VlarenaGatewayLatencyHigh",
        (Condition("route:vlarena_http_request_duration_seconds:p99_rate5m", "> 2"),),
        "10m",
        "warning",
        "p99 latency of {{ $labels.route }} is above 2 s",
        "The gateway's 99th percentile for {{ $labels.route }} is {{ $value | humanizeDuration }}"
        " (log and event streams excluded).",
        "Inference routes: compare with Triton's queue and compute time on the vlarena serving "
        "dashboard; a long queue means too few Triton replicas or instances. Other routes: "
        "check Redis latency (`redis-cli --latency`) and the gateway's CPU; scale the gateway "
        "(HPA) or add uvicorn workers (VLARENA_GATEWAY_WORKERS).",
    ),
    Alert(
        "VlarenaQueueBacklogGrowing",
        (
            Condition("queue:vlarena_queue_jobs:max", "> 0"),
            Condition("deriv(queue:vlarena_queue_jobs:max[15m])", "> 0"),
        ),
        "15m",
        "warning",
        "The {{ $labels.queue }} job queue keeps growing",
        "Jobs waiting on queue {{ $labels.queue }} have grown for 30 minutes.",
        "Compare vlarena_workers and vlarena_worker_busy on the vlarena workers dashboard: all "
        "busy means too few workers (check the worker autoscaler, KEDA or HPA, and its "
        "maxReplicas; GPU queue: free GPU nodes). Idle workers mean they do not take jobs: "
        "read their logs and check they serve this queue (VLARENA_WORKER_QUEUES).",
    ),
    Alert(
        "VlarenaJobFailureRatioHigh",
        (Condition("vlarena:worker_jobs_failed:ratio_rate1h", "> 0.25"),),
        "15m",
        "warning",
        "More than a quarter of finished jobs failed in the last hour",
        "{{ $value | humanizePercentage }} of the jobs that ended in the last hour failed "
        "after their retries.",
        "List them with `vlarena jobs list --state FAILED`; `vlarena jobs get ID` shows the "
        "error and `vlarena jobs logs ID` the attempt's log. Many at once: look for a common "
        "cause (dataset path, artifact store full, CUDA out of memory) in the workers' logs, "
        "filtered by job_id.",
    ),
    Alert(
        "VlarenaNoWorkerUp",
        (Condition("sum(queue:vlarena_workers:max)", "< 1"),),
        "5m",
        "critical",
        "No vlarena worker is alive",
        "No worker has sent a heartbeat to Redis for 5 minutes: no job can run.",
        "Check the worker pods or processes (`kubectl get pods -l "
        "app.kubernetes.io/component=worker`, `docker compose ps worker`): crash loops are "
        "in their logs; pending pods lack nodes. Workers that run but do not register cannot "
        "reach Redis (VLARENA_REDIS_URL).",
    ),
    Alert(
        "VlarenaQueueWithoutWorkers",
        (
            Condition("queue:vlarena_queue_jobs:max", "> 0"),
            Condition("queue:vlarena_workers:max", "< 1", "and on (queue)"),
        ),
        "10m",
        "warning",
        "Jobs wait on queue {{ $labels.queue }}, which no worker serves",
        "Jobs have waited on queue {{ $labels.queue }} for 10 minutes with no live worker "
        "taking from it.",
        "Start workers for the queue (VLARENA_WORKER_QUEUES={{ $labels.queue }}); on a "
        "cluster, check the queue's worker pool is enabled and its autoscaler can schedule "
        "pods (GPU pool: node pool size, taints and tolerations).",
    ),
    Alert(
        "VlarenaTritonQueueTimeHigh",
        (Condition("model:nv_inference_queue_duration_seconds:avg_rate5m", "> 0.1"),),
        "10m",
        "warning",
        "Requests to {{ $labels.model }} wait more than 100 ms in Triton's queue",
        "Triton requests to {{ $labels.model }} queued for {{ $value | humanizeDuration }} on "
        "average over 5 minutes.",
        "Scale Triton (its HPA acts on this queue time; check maxReplicas and GPU nodes), or "
        "give the model more instances or a larger max_batch_size in its config. Compare "
        "compute time on the vlarena serving dashboard: a slow model needs FP16 or INT8.",
    ),
    Alert(
        "VlarenaGpuIdleWhileTritonQueueGrows",
        (
            Condition("avg by (instance) (nv_gpu_utilization)", "< 0.3"),
            Condition(
                "sum by (instance) (nv_inference_pending_request_count)", "> 0", "and on (instance)"
            ),
            Condition(
                "deriv(sum by (instance) (nv_inference_pending_request_count)[10m:])",
                "> 0",
                "and on (instance)",
            ),
        ),
        "10m",
        "warning",
        "Triton {{ $labels.instance }} queues requests while its GPU idles",
        "Pending requests on {{ $labels.instance }} keep growing while its GPU is less than "
        "30% busy: the GPU is not the bottleneck.",
        "Requests are serialised before the GPU: raise the model's instance_group count or "
        "dynamic batching's max_queue_delay, check the python backend is not in use on GPUs "
        "(VLARENA_TRITON_BACKEND=onnxruntime), and that the gateway's Triton pool "
        "(VLARENA_TRITON_POOL_SIZE) is not what limits concurrency.",
    ),
)


def rule_groups() -> dict[str, Any]:
    """The rule file: recording rules, then alerts."""
    return {
        "groups": [
            {
                "name": "vlarena.recording",
                "rules": [{"record": r.record, "expr": r.expr} for r in RECORDINGS],
            },
            {"name": "vlarena.alerts", "rules": [a.rule() for a in ALERTS]},
        ]
    }
