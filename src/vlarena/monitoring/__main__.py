"""`python -m vlarena.monitoring [--out DIR]`: writes the dashboards, rules and scrape configs
into `monitoring/` (tests fail while the checked-in files differ from what this writes)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlarena.monitoring.dashboards import DASHBOARDS
from vlarena.monitoring.prometheus import compose_config, local_config
from vlarena.monitoring.rule_tests import TESTS_FILE, promtool_tests
from vlarena.monitoring.rules import RULES_FILE, rule_groups
from vlarena.monitoring.yaml_files import dump_yaml


def generated_files() -> dict[str, str]:
    """Path under monitoring/ to content, for every generated file."""
    files = {f"grafana/{d.uid}.json": json.dumps(d.json(), indent=2) + "\n" for d in DASHBOARDS}
    files[f"rules/{RULES_FILE}"] = dump_yaml(rule_groups())
    files[f"tests/{TESTS_FILE}"] = dump_yaml(promtool_tests())
    files["prometheus/compose.yml"] = dump_yaml(compose_config())
    files["prometheus/local.yml"] = dump_yaml(local_config())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlarena.monitoring", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("monitoring"))
    args = parser.parse_args(argv)
    for name, text in generated_files().items():
        path = args.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
