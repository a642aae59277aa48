"""A compare job over two budgets: each budget's own runs and schedule, metrics.json's sweep and
the report's sweep section."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import tiny_spec
from tests.experiments.jobs import run_job

from vlarena.files import read_json
from vlarena.rundirs import JobDir


def test_a_compare_job_trains_and_reports_each_budget_of_a_sweep(tmp_path: Path) -> None:
    spec = tiny_spec(
        seeds=1,
        budgets=[{"samples": 128}, {"samples": 64}],
        evaluation={"maxImages": 32, "metrics": ["caption_choice"], "curvePoints": 0},
        report={"probes": False},
        export=False,
    )
    del spec["budget"]
    result = run_job(spec, tmp_path)
    job = JobDir(tmp_path)
    small = job.at_budget("samples", 64)
    for family in ("token-vlm", "vl-jepa"):
        # The largest budget's runs are the job's own; the smaller one lies apart, trained to
        # its own budget (the loop's schedule spans it).
        for at, samples in ((job, 128), (small, 64)):
            run = at.seed_run(family, 0)
            assert read_json(run.result)["samplesSeen"] == samples
            assert read_json(run.run_file)["train"]["budget_samples"] == samples
    assert "budgets/samples-64/metrics.json" in result["artifacts"]
    doc = read_json(job.metrics)
    assert doc["schema"] == "vlarena.metrics/v4"
    assert doc["budget"] == {"samples": 128}
    assert [e["budget"] for e in doc["sweep"]] == [{"samples": 64}, {"samples": 128}]
    for entry in doc["sweep"]:
        for body in entry["families"].values():
            (run,) = body["seeds"]
            assert run["trainingSeconds"] > 0 and run["trainFlops"] > 0
        assert entry["paired"]  # both families scored the same test items
    assert read_json(small.metrics)["budget"] == {"samples": 64}
    report = json.loads((job.report / "report.json").read_text())
    assert report["sweep"]["labels"] == ["64 samples", "128 samples"]
    # One seed per family decides nothing, at either budget.
    assert {u["crossover"]["kind"] for u in report["sweep"]["useCases"]} == {"none"}
    assert '<section id="sweep">' in (job.report / "report.html").read_text()
    assert "budget_sweep" in report["figures"]
