"""`promtool test rules` cases of every alert, written to `monitoring/tests/vlarena_test.yml`.

Each case gives input series, a time, and the alerts expected then (none: it stays quiet). The
expected annotations are the alert's own, with `$labels` filled in and `$value` as the case says
Prometheus renders it, so a changed threshold, query or template breaks a case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vlarena.monitoring.rules import ALERTS, RULES_FILE, Alert

TESTS_FILE = "vlarena_test.yml"


@dataclass(frozen=True)
class Firing:
    labels: dict[str, str]
    value: str = ""  # `{{ $value | ... }}` as rendered


@dataclass(frozen=True)
class AlertCase:
    alert: str
    series: dict[str, str]
    at: str
    firing: tuple[Firing, ...] = field(default_factory=tuple)


def _bucket(name: str, labels: str, counts: dict[str, str]) -> dict[str, str]:
    return {f'{name}_bucket{{{labels},le="{le}"}}': values for le, values in counts.items()}


HTTP = "vlarena_http_requests_total"
LATENCY = "vlarena_http_request_duration_seconds"
GW = 'instance="gateway-0:8080",job="vlarena-gateway"'

CASES: tuple[AlertCase, ...] = (
    # 870 of 1000 MB used, seen by two gateways; at 500 MB, or with no maxmemory, it is quiet.
    AlertCase(
        "VlarenaRedisMemoryHigh",
        {
            'vlarena_redis_memory_used_bytes{instance="gateway-0:8080"}': "870e6x10",
            'vlarena_redis_memory_used_bytes{instance="gateway-1:8080"}': "870e6x10",
            'vlarena_redis_memory_max_bytes{instance="gateway-0:8080"}': "1e9x10",
            'vlarena_redis_memory_max_bytes{instance="gateway-1:8080"}': "1e9x10",
        },
        "10m",
        (Firing({"severity": "warning"}, "87%"),),
    ),
    AlertCase(
        "VlarenaRedisMemoryHigh",
        {
            'vlarena_redis_memory_used_bytes{instance="gateway-0:8080"}': "500e6x10",
            'vlarena_redis_memory_max_bytes{instance="gateway-0:8080"}': "1e9x10",
        },
        "10m",
    ),
    AlertCase(
        "VlarenaRedisMemoryHigh",
        {
            'vlarena_redis_memory_used_bytes{instance="gateway-0:8080"}': "870e6x10",
            'vlarena_redis_memory_max_bytes{instance="gateway-0:8080"}': "0x10",
        },
        "10m",
    ),
    # 0.1 errors/s against 1 ok/s: 9.1%.
    AlertCase(
        "VlarenaGatewayErrorRatioHigh",
        {
            f'{HTTP}{{{GW},route="/v1/jobs",method="GET",status="200"}}': "0+60x20",
            f'{HTTP}{{{GW},route="/v1/caption",method="POST",status="503"}}': "0+6x20",
        },
        "10m",
        (Firing({"severity": "critical"}, "9.091%"),),
    ),
    # No 5xx series at all: the ratio is 0, not absent.
    AlertCase(
        "VlarenaGatewayErrorRatioHigh",
        {f'{HTTP}{{{GW},route="/v1/jobs",method="GET",status="200"}}': "0+60x20"},
        "10m",
    ),
    # Captions take 2.5-5 s; a followed log stream lasts far longer but is no latency; job
    # reads are fast.
    AlertCase(
        "VlarenaGatewayLatencyHigh",
        {
            **_bucket(
                LATENCY,
                f'{GW},route="/v1/caption",method="POST"',
                {"1.0": "0x30", "2.5": "0x30", "5.0": "0+10x30", "+Inf": "0+10x30"},
            ),
            **_bucket(
                LATENCY,
                f'{GW},route="/v1/jobs/{{job_id}}/logs",method="GET"',
                {"1.0": "0x30", "10.0": "0x30", "+Inf": "0+10x30"},
            ),
            **_bucket(
                LATENCY,
                f'{GW},route="/v1/jobs",method="GET"',
                {"0.1": "0+10x30", "1.0": "0+10x30", "+Inf": "0+10x30"},
            ),
        },
        "15m",
        (Firing({"severity": "warning", "route": "/v1/caption"}, "4.975s"),),
    ),
    # cpu grows by one job a minute (seen by two gateways); gpu stays at 3.
    AlertCase(
        "VlarenaQueueBacklogGrowing",
        {
            'vlarena_queue_jobs{instance="gateway-0:8080",queue="cpu"}': "0+1x60",
            'vlarena_queue_jobs{instance="gateway-1:8080",queue="cpu"}': "0+1x60",
            'vlarena_queue_jobs{instance="gateway-0:8080",queue="gpu"}': "3x60",
        },
        "30m",
        (Firing({"severity": "warning", "queue": "cpu"}),),
    ),
    AlertCase(
        "VlarenaQueueBacklogGrowing",
        {'vlarena_queue_jobs{instance="gateway-0:8080",queue="cpu"}': "0+1x60"},
        "10m",
    ),
    # As many jobs failed as succeeded; retried attempts do not count.
    AlertCase(
        "VlarenaJobFailureRatioHigh",
        {
            'vlarena_worker_jobs_ended_total{type="train",outcome="succeeded"}': "0+1x60",
            'vlarena_worker_jobs_ended_total{type="train",outcome="failed"}': "0+1x60",
            'vlarena_worker_jobs_ended_total{type="train",outcome="retried"}': "0+5x60",
        },
        "30m",
        (Firing({"severity": "warning"}, "50%"),),
    ),
    AlertCase(
        "VlarenaJobFailureRatioHigh",
        {
            'vlarena_worker_jobs_ended_total{type="train",outcome="succeeded"}': "0+1x60",
            'vlarena_worker_jobs_ended_total{type="train",outcome="retried"}': "0+5x60",
        },
        "30m",
    ),
    # The last worker stops at 3 m.
    AlertCase(
        "VlarenaNoWorkerUp",
        {
            'vlarena_workers{instance="gateway-0:8080",queue="cpu"}': "1 1 1 0x20",
            'vlarena_workers{instance="gateway-0:8080",queue="gpu"}': "0x23",
        },
        "15m",
        (Firing({"severity": "critical"}),),
    ),
    AlertCase(
        "VlarenaNoWorkerUp",
        {
            'vlarena_workers{instance="gateway-0:8080",queue="cpu"}': "1 1 1 0x20",
            'vlarena_workers{instance="gateway-0:8080",queue="gpu"}': "0x23",
        },
        "6m",
    ),
    # Jobs wait on both queues; only cpu has a worker.
    AlertCase(
        "VlarenaQueueWithoutWorkers",
        {
            'vlarena_queue_jobs{instance="gateway-0:8080",queue="cpu"}': "2x30",
            'vlarena_queue_jobs{instance="gateway-0:8080",queue="gpu"}': "2x30",
            'vlarena_workers{instance="gateway-0:8080",queue="cpu"}': "1x30",
            'vlarena_workers{instance="gateway-0:8080",queue="gpu"}': "0x30",
        },
        "15m",
        (Firing({"severity": "warning", "queue": "gpu"}),),
    ),
    # m1 queues 0.2 s per request, m2 0.01 s.
    AlertCase(
        "VlarenaTritonQueueTimeHigh",
        {
            'nv_inference_queue_duration_us{model="m1",version="1"}': "0+12000000x30",
            'nv_inference_request_success{model="m1",version="1"}': "0+60x30",
            'nv_inference_queue_duration_us{model="m2",version="1"}': "0+600000x30",
            'nv_inference_request_success{model="m2",version="1"}': "0+60x30",
        },
        "20m",
        (Firing({"severity": "warning", "model": "m1"}, "200ms"),),
    ),
    # triton-0: GPU at 10% and pending requests growing. triton-1: growing but the GPU is busy.
    # triton-2: GPU idle, requests pending but not growing.
    AlertCase(
        "VlarenaGpuIdleWhileTritonQueueGrows",
        {
            'nv_gpu_utilization{instance="triton-0:8002",gpu_uuid="GPU-0"}': "0.1x30",
            'nv_inference_pending_request_count{instance="triton-0:8002",model="m1"}': "0+1x30",
            'nv_gpu_utilization{instance="triton-1:8002",gpu_uuid="GPU-1"}': "0.9x30",
            'nv_inference_pending_request_count{instance="triton-1:8002",model="m1"}': "0+1x30",
            'nv_gpu_utilization{instance="triton-2:8002",gpu_uuid="GPU-2"}': "0.1x30",
            'nv_inference_pending_request_count{instance="triton-2:8002",model="m1"}': "5x30",
        },
        "20m",
        (Firing({"severity": "warning", "instance": "triton-0:8002"}),),
    ),
)

_LABEL = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")
_VALUE = re.compile(r"\{\{\s*\$value[^}]*\}\}")


def render(template: str, labels: dict[str, str], value: str) -> str:
    """An annotation template with `$labels.x` and `$value` filled in."""
    return _VALUE.sub(value, _LABEL.sub(lambda m: labels.get(m.group(1), ""), template))


def _expected(alert: Alert, firing: Firing) -> dict[str, Any]:
    annotations = alert.rule()["annotations"]
    return {
        "exp_labels": firing.labels,
        "exp_annotations": {
            k: render(v, firing.labels, firing.value) for k, v in annotations.items()
        },
    }


def promtool_tests() -> dict[str, Any]:
    """The promtool test file: one test per case."""
    alerts = {a.name: a for a in ALERTS}
    tests = []
    for case in CASES:
        alert = alerts[case.alert]
        tests.append(
            {
                "name": f"{case.alert} at {case.at}" + ("" if case.firing else " (quiet)"),
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [
                    {
                        "eval_time": case.at,
                        "alertname": case.alert,
                        "exp_alerts": [_expected(alert, f) for f in case.firing],
                    }
                ],
            }
        )
    return {
        "rule_files": [f"../rules/{RULES_FILE}"],
        "evaluation_interval": "1m",
        "tests": tests,
    }
