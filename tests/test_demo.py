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
    # How long each stage took, printed and kept.
    stages = {s["stage"]: s["seconds"] for s in summary["stages"]}
    assert "start the local stack" in stages and "total (set-up excluded)" in stages
    assert any(s.startswith("job: train (") for s in stages), stages
    assert "how long each stage took" in result.stdout
    assert (
        sum(t for s, t in stages.items() if s.startswith("job: "))
        <= stages["total (set-up excluded)"]
    )
    # Everything it started has stopped: its ports answer no more.
    import httpx

    with pytest.raises(httpx.TransportError):
        httpx.get(f"{summary['apiUrl']}/healthz", timeout=2)


def test_the_stage_clock_adds_up_each_stage_in_the_order_it_came() -> None:
    from vlarena.demo import StageClock

    label = StageClock.label
    assert label({"state": "QUEUED"}) == "queued"
    assert label({"state": "RUNNING", "progress": None}) == "starting"
    running = {"state": "RUNNING", "progress": {"phase": "train", "run": "vl-jepa seed 0"}}
    assert label(running) == "train (vl-jepa seed 0)"
    assert label({"state": "SUCCEEDED"}) is None
    clock = StageClock("http://127.0.0.1:9", "k", "job-x")
    for at, stage in [(0, "queued"), (2, "train"), (2.5, "train"), (5, "evaluate")]:
        clock.note(stage, at)
    clock.note("train", 6)  # a retried attempt trains again
    clock.note(None, 9)
    assert clock.seconds() == [("queued", 2), ("train", 6), ("evaluate", 1)]
