"""promtool checks the rules and scrape configs, and runs the rules' unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vlarena.monitoring.prometheus import prepare_local
from vlarena.monitoring.rule_tests import CASES
from vlarena.monitoring.rules import ALERTS

MONITORING = Path(__file__).parents[2] / "monitoring"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

pytestmark = pytest.mark.skipif(
    not Path(PROMTOOL).exists(), reason="promtool is not installed (make system-deps)"
)


def promtool(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_rule_files_pass_promtool_check_rules() -> None:
    files = sorted(str(p) for p in (MONITORING / "rules").glob("*.yml"))
    assert files
    out = promtool("check", "rules", *files)
    assert (
        f"{sum(len(g['rules']) for f in files for g in yaml.safe_load(Path(f).read_text())['groups'])} rules found"
        in out
    )


def test_scrape_configs_pass_promtool_check_config(tmp_path: Path) -> None:
    demo = prepare_local(
        tmp_path, gateway="127.0.0.1:1", worker="127.0.0.1:2", triton="127.0.0.1:3", port=4
    )
    for config in (
        MONITORING / "prometheus" / "compose.yml",
        MONITORING / "prometheus" / "local.yml",
        Path(demo[1].removeprefix("--config.file=")),
    ):
        promtool("check", "config", str(config))
    # The local and demo configs load vlarena's rules.
    assert "1 rule files found" in promtool(
        "check", "config", str(MONITORING / "prometheus" / "local.yml")
    )


def test_alert_rules_pass_their_promtool_cases() -> None:
    promtool("test", "rules", "vlarena_test.yml", cwd=MONITORING / "tests")


def test_promtool_cases_fail_when_an_alert_changes(tmp_path: Path) -> None:
    rules = yaml.safe_load((MONITORING / "rules" / "vlarena.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "VlarenaTritonQueueTimeHigh":
                rule["expr"] = rule["expr"].replace("> 0.1", "> 0.5")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "vlarena.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests").mkdir()
    shutil.copy(MONITORING / "tests" / "vlarena_test.yml", tmp_path / "tests")
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "vlarena_test.yml"],
        capture_output=True,
        text=True,
        cwd=tmp_path / "tests",
        timeout=60,
    )
    assert result.returncode != 0
    assert "VlarenaTritonQueueTimeHigh" in result.stdout + result.stderr


def test_every_alert_has_a_case_where_it_fires() -> None:
    firing = {case.alert for case in CASES if case.firing}
    assert firing == {alert.name for alert in ALERTS}
