"""monitoring/ holds what `python -m vlarena.monitoring` writes, and compose uses those files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from vlarena.monitoring.__main__ import generated_files, main
from vlarena.monitoring.dashboards import DASHBOARDS

ROOT = Path(__file__).parents[2]
MONITORING = ROOT / "monitoring"


def test_checked_in_monitoring_files_are_current(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    written = {str(p.relative_to(tmp_path)): p.read_text() for p in tmp_path.rglob("*.*")}
    assert written == generated_files()
    checked_in = {
        str(p.relative_to(MONITORING)): p.read_text() for p in MONITORING.rglob("*") if p.is_file()
    }
    assert checked_in == written, "monitoring/ is stale: run `python -m vlarena.monitoring`"


def test_dashboards_are_grafana_dashboards() -> None:
    uids = set()
    for dashboard in DASHBOARDS:
        document = json.loads((MONITORING / "grafana" / f"{dashboard.uid}.json").read_text())
        assert document["uid"] == dashboard.uid not in uids
        uids.add(dashboard.uid)
        variables = {v["name"] for v in document["templating"]["list"]}
        cells = set()
        for panel in document["panels"]:
            box = panel["gridPos"]
            area = {
                (x, y)
                for x in range(box["x"], box["x"] + box["w"])
                for y in range(box["y"], box["y"] + box["h"])
            }
            assert not area & cells, f"{panel['title']} overlaps another panel"
            cells |= area
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                used = set(re.findall(r"\$\{?(\w+)", target["expr"])) - {"__rate_interval"}
                assert used <= variables, (panel["title"], used)
                # Grafana sends `.*` for All: variables stand only in regex matchers.
                assert not re.search(r'[^~]="\$', target["expr"]), target["expr"]


def test_compose_mounts_the_generated_prometheus_config_and_rules() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(
        v.rsplit(":", 1)[0].split(":", 1)
        for v in compose["services"]["prometheus"]["volumes"]
        if v.startswith("./")
    )
    assert mounts["./monitoring/prometheus/compose.yml"] == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load((MONITORING / "prometheus" / "compose.yml").read_text())
    (rules,) = config["rule_files"]
    assert rules.startswith(mounts["./monitoring/rules"] + "/")
    assert any((MONITORING / "rules").glob(Path(rules).name))
    grafana = compose["services"]["grafana"]["volumes"]
    assert "./monitoring/grafana:/var/lib/grafana/dashboards/vlarena:ro" in grafana
