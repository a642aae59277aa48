"""The catalogue of exported metrics is what the code registers, and dashboards and rules name
only catalogued metrics (or series the rules record)."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from vlarena.gateway import metrics as gateway_metrics
from vlarena.monitoring.catalogue import EXPORTED, needs_gpu, series_names
from vlarena.monitoring.dashboards import DASHBOARDS
from vlarena.monitoring.promql import metric_names
from vlarena.monitoring.rule_tests import CASES
from vlarena.monitoring.rules import ALERTS, RECORDINGS
from vlarena.worker import metrics as worker_metrics

_TYPE = re.compile(r"^# TYPE (vlarena_\w+) (\w+)$", re.MULTILINE)


def _registered() -> set[tuple[str, str]]:
    """(name, kind) of every vlarena_ family the gateway and worker modules can export."""
    gauges = CollectorRegistry()
    gauges.register(
        gateway_metrics._JobGauges({"jobs": {}, "waiting": {}, "workers": {}, "memory": {}})
    )
    gauges.register(worker_metrics.RunningJobGauges(lambda: None))
    text = (generate_latest(REGISTRY) + generate_latest(gauges)).decode()
    return set(_TYPE.findall(text))


def test_catalogue_is_what_the_gateway_and_worker_register() -> None:
    catalogued = {(m.name, m.kind) for m in EXPORTED if m.component != "triton"}
    assert catalogued == _registered()


def test_exported_metrics_follow_the_naming_rules() -> None:
    for metric in EXPORTED:
        if metric.component == "triton":
            assert metric.name.startswith("nv_")
            continue
        assert metric.name.startswith("vlarena_")
        assert metric.name.endswith("_total") == (metric.kind == "counter"), metric
        if metric.kind == "histogram":
            assert metric.name.endswith("_seconds"), metric


def _allowed() -> set[str]:
    return set(series_names()) | {r.record for r in RECORDINGS}


def test_dashboards_name_only_exported_metrics() -> None:
    unknown = set()
    for dashboard in DASHBOARDS:
        exprs = dashboard.queries() + [v.metric for v in dashboard.variables]
        for expr in exprs:
            unknown |= metric_names(expr) - _allowed()
    assert not unknown


def test_rules_name_only_exported_metrics() -> None:
    exprs = [r.expr for r in RECORDINGS] + [a.expr for a in ALERTS]
    assert not set().union(*(metric_names(e) for e in exprs)) - _allowed()


def test_every_exported_metric_is_on_a_dashboard_or_in_a_rule() -> None:
    used = set()
    for expr in [q for d in DASHBOARDS for q in d.queries()] + [r.expr for r in RECORDINGS]:
        used |= metric_names(expr)
    names = series_names()
    assert not {m.name for m in EXPORTED} - {names[n].name for n in used if n in names}


def test_rules_that_need_a_gpu_have_promtool_cases() -> None:
    for alert in ALERTS:
        if any(needs_gpu(name) for name in metric_names(alert.expr)):
            assert any(c.alert == alert.name and c.firing for c in CASES), alert.name


def test_metric_names_finds_selectors_not_functions_labels_or_keywords() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_seconds_bucket{route!~"x|y"}[5m])))'
        " / ignoring (le) (b_total offset 10m or vector(0)) > bool 1e3"
        ' and on (queue) deriv(queue:c:max{queue=~"$queue"}[$__rate_interval])'
        " unless count without (instance) (d)"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "queue:c:max", "d"}
