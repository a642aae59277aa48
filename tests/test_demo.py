"""`vlarena demo --tiny`: the whole local platform (Redis, Triton, worker, gateway, triton-sync)
runs a compare job through the API, promotes the better family and serves it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_compares_promotes_and_serves(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlarena.cli",
            "demo",
            "--tiny",
            "--budget-samples",
            "4096",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    families = summary["families"]
    assert set(families) == {"token-vlm", "vl-jepa"}
    production = summary["production"]
    metric = "i2t_r1@32"
    assert families[production["family"]]["metrics"][metric] == max(
        f["metrics"][metric] for f in families.values()
    )
    assert len(summary["served"]) == 4
    for row in summary["served"]:
        assert row["caption"].strip() and row["topLabel"]
    assert Path(summary["report"]).is_file()
    assert f"/v1/jobs/{summary['job']}/report?expires=" in summary["reportLink"]
    assert "promoted" in result.stdout and "served through the gateway" in result.stdout
    # Everything it started has stopped: its ports answer no more.
    import httpx

    with pytest.raises(httpx.TransportError):
        httpx.get(f"{summary['apiUrl']}/healthz", timeout=2)
