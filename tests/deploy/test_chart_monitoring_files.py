"""The chart ships monitoring/'s dashboards and alert rules: its synced copy is current, and the
files become labelled dashboard ConfigMaps and a PrometheusRule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from .rendering import CHART, ROOT, by_kind, full, helm, template_args

MONITORING = ROOT / "monitoring"
MONITORING_API = "monitoring.coreos.com/v1"


def expected_copies() -> dict[str, bytes]:
    """What `make chart-files` puts under files/: every dashboard, and every rule file."""
    copies = {}
    for path in sorted((MONITORING / "grafana").rglob("*.json")):
        copies[f"dashboards/{path.name}"] = path.read_bytes()
    for path in sorted((MONITORING / "rules").rglob("*.y*ml")):
        if path.suffix in {".yml", ".yaml"} and "groups" in (
            yaml.safe_load(path.read_text()) or {}
        ):
            copies[f"rules/{path.name}"] = path.read_bytes()
    return copies


def test_chart_copy_of_monitoring_is_current() -> None:
    files = CHART / "files"
    shipped = {
        str(p.relative_to(files)): p.read_bytes()
        for p in sorted(files.rglob("*"))
        if p.is_file() and p.name != ".gitkeep"
    }
    assert shipped == expected_copies(), "charts/vlarena/files is stale: run `make chart-files`"


def render_with_monitoring_files(tmp_path: Path, *api_versions: str) -> list[dict]:
    chart = tmp_path / "vlarena"
    shutil.copytree(CHART, chart)
    # Only the files below: the shipped ones are rendered in their own test.
    for shipped in [*(chart / "files").glob("*/*.json"), *(chart / "files").glob("*/*.y*ml")]:
        shipped.unlink()
    dashboard = {"title": "vlarena API", "uid": "vlarena-api", "panels": []}
    (chart / "files" / "dashboards" / "api_overview.json").write_text(json.dumps(dashboard))
    rules = {
        "groups": [
            {
                "name": "vlarena-gateway",
                "rules": [
                    {
                        "alert": "VlarenaGatewayErrors",
                        "expr": 'sum(rate(vlarena_http_requests_total{status=~"5.."}[5m])) > 1',
                        "annotations": {"summary": "{{ $labels.route }} fails"},
                    }
                ],
            }
        ]
    }
    (chart / "files" / "rules" / "gateway.yml").write_text(yaml.safe_dump(rules))
    # A promtool test file beside the rules is not a rule file.
    (chart / "files" / "rules" / "gateway_test.yaml").write_text(
        "rule_files: [gateway.yml]\ntests: []\n"
    )
    out = helm(*template_args(api_versions=api_versions), chart=chart).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_dashboards_become_configmaps_grafana_picks_up(tmp_path: Path) -> None:
    objects = render_with_monitoring_files(tmp_path)
    (configmap,) = [
        c for c in by_kind(objects, "ConfigMap") if "dashboard" in c["metadata"]["name"]
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["name"] == f"{full('dashboard')}-api-overview"
    assert json.loads(configmap["data"]["api_overview.json"])["uid"] == "vlarena-api"
    # The operator's API is absent here, so no PrometheusRule.
    assert not by_kind(objects, "PrometheusRule")


def test_rule_files_become_one_prometheus_rule_verbatim(tmp_path: Path) -> None:
    objects = render_with_monitoring_files(tmp_path, MONITORING_API)
    (rule,) = by_kind(objects, "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    assert group["rules"][0]["annotations"]["summary"] == "{{ $labels.route }} fails"


def test_shipped_dashboards_and_rules_render() -> None:
    objects = [
        d
        for d in yaml.safe_load_all(helm(*template_args(api_versions=[MONITORING_API])).stdout)
        if d
    ]
    shipped = expected_copies()
    dashboards = {
        name
        for c in by_kind(objects, "ConfigMap")
        if c["metadata"]["labels"].get("grafana_dashboard") == "1"
        for name in c["data"]
    }
    assert dashboards == {k.removeprefix("dashboards/") for k in shipped if k.startswith("dash")}
    (rule,) = by_kind(objects, "PrometheusRule")
    groups = [
        group
        for name, text in shipped.items()
        if name.startswith("rules/")
        for group in yaml.safe_load(text)["groups"]
    ]
    assert rule["spec"]["groups"] == groups


def test_no_prometheus_rule_without_rule_files() -> None:
    if expected_copies():
        return
    out = helm(*template_args(api_versions=[MONITORING_API])).stdout
    assert "kind: PrometheusRule" not in out
