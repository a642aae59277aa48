"""`vlarena run-job`, what every pod of a multi-node job runs: a spec file in, the trainer's
events as JSON lines out (what the launcher reads from rank 0's log), the result left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

SPEC = {
    "type": "train",
    "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
    "dataset": {"name": "fashion-grid", "options": {"n_train": 32, "n_val": 8, "n_test": 16}},
    "hyperparameters": {"batchSize": 8, "warmupSteps": 1, "logEverySteps": 1},
    "budget": {"steps": 2},
    "evaluation": {
        "curvePoints": 0,
        "maxImages": 8,
        "generateImages": 2,
        "latencyRepeats": 0,
        "retrievalPools": [4],
    },
    "export": False,
}


def run_job(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("vlarena")
    return subprocess.run([str(exe), "run-job", *args], capture_output=True, text=True, timeout=240)


def test_run_job_prints_events_as_json_lines_and_leaves_the_result(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    done = run_job(str(spec), "--out", str(tmp_path / "run"), "--events")
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(events) == len(done.stdout.splitlines())  # nothing else on stdout
    progress = [e for e in events if e["type"] == "progress" and e["phase"] == "train"]
    assert [e["step"] for e in progress] == [1, 2]
    phases = {e["phase"] for e in events if e["type"] == "progress"}
    assert {"load-data", "prepare-texts", "evaluate"} <= phases
    assert any(e["type"] == "artifact" and e["kind"] == "checkpoint" for e in events)
    result = json.loads((tmp_path / "run" / "job-result.json").read_text())
    assert result["models"][0]["family"] == "token-vlm"
    assert result["metrics"]["i2t_r1@4"] >= 0.0


def test_run_job_names_what_is_wrong_with_a_bad_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "budget": {"steps": 0}}))
    done = run_job(str(spec), "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert "budget.steps: Input should be greater than 0" in done.stderr
    assert done.stderr.count("\n") == 1  # one line a person can act on
