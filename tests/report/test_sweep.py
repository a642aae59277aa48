"""Budget sweeps in the report: the decision at each budget, the crossover per use case, the
section, figure and text summary, and a one-budget comparison's report without any of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.report.synthetic import metrics_doc

from vlarena.evaluation.report.comparison import build_report, sweep_of
from vlarena.evaluation.report.page import PAGE_FILE
from vlarena.evaluation.report.report import ReportConfig, render_report, verdict_lines
from vlarena.evaluation.report.sweep import budget_label, budget_range, crossover, sweep_lines
from vlarena.experiments.results import METRICS_SCHEMA, sweep_document

BUDGETS = ["5k samples", "10k samples", "20k samples", "40k samples"]


def case(winner: str | None, outcome: str | None = None) -> dict[str, Any]:
    """A use case's decision at one budget, as the verdict gives it."""
    return {"winner": winner, "outcome": outcome or ("winner" if winner else "undecided")}


def test_a_family_that_overtakes_the_other_and_stays_ahead_is_a_crossover():
    cases = [case("token-vlm"), case(None), case("vl-jepa"), case("vl-jepa")]
    found = crossover("choosing", "caption_of_10", BUDGETS, cases)
    assert (found["kind"], found["family"], found["budget"]) == (
        "crossover",
        "vl-jepa",
        "20k samples",
    )
    assert found["sentence"].startswith(
        "For choosing, vl-jepa overtakes token-vlm on caption_of_10 at 20k samples and stays ahead up to 40k samples;"
    )
    assert "token-vlm was ahead at 5k samples" in found["sentence"]
    assert "neither family was decided better at 10k samples" in found["sentence"]


def test_pulling_ahead_of_an_undecided_start_is_a_crossover_without_a_rival():
    cases = [
        case(None, "too-few-seeds"),
        case(None, "equivalent"),
        case("vl-jepa"),
        case("vl-jepa"),
    ]
    found = crossover("answering", "vqa_accuracy", BUDGETS, cases)
    assert (found["kind"], found["budget"]) == ("crossover", "20k samples")
    assert "vl-jepa pulls ahead on vqa_accuracy at 20k samples" in found["sentence"]
    assert "overtakes" not in found["sentence"]


def test_only_the_last_change_of_lead_counts():
    cases = [case("vl-jepa"), case("token-vlm"), case("vl-jepa"), case("vl-jepa")]
    found = crossover("choosing", "caption_of_10", BUDGETS, cases)
    assert (found["family"], found["budget"]) == ("vl-jepa", "20k samples")
    assert "vl-jepa was also ahead at 5k samples" in found["sentence"]


def test_a_family_ahead_at_every_budget_makes_no_crossover():
    found = crossover("answering", "vqa_accuracy", BUDGETS, [case("vl-jepa")] * 4)
    assert (found["kind"], found["family"]) == ("leads-throughout", "vl-jepa")
    assert "no crossover in the range 5k–40k samples" in found["sentence"]
    assert "vl-jepa is decided better on vqa_accuracy at every budget" in found["sentence"]


def test_no_family_ahead_at_the_largest_budget_makes_no_crossover():
    cases = [case("token-vlm"), case("token-vlm"), case("vl-jepa"), case(None, "equivalent")]
    found = crossover("describing", "cider", BUDGETS, cases)
    assert (found["kind"], found["family"], found["budget"]) == ("none", None, None)
    assert "no crossover in the range 5k–40k samples" in found["sentence"]
    assert "token-vlm was ahead at 5k samples and 10k samples" in found["sentence"]


def test_no_verdict_at_any_budget_says_why():
    found = crossover("describing", "cider", BUDGETS, [case(None, "too-few-seeds")] * 4)
    assert found["kind"] == "none"
    assert "no verdict at any budget (fewer seeds per family" in found["sentence"]


@pytest.mark.parametrize(
    ("budget", "label"),
    [
        ({"samples": 20000}, "20k samples"),
        ({"samples": 1500}, "1.5k samples"),
        ({"steps": 300}, "300 steps"),
        ({"samples": 2_000_000}, "2M samples"),
    ],
)
def test_budgets_read_short(budget, label):
    assert budget_label(budget) == label
    assert budget_range(["500 " + label.split(" ")[1], label]) == f"500–{label}"


def with_costs(doc: dict[str, Any], flops_per_sample: dict[str, float]) -> dict[str, Any]:
    """A synthetic document's runs with the stages and FLOPs a training run records."""
    for fam, body in doc["families"].items():
        for run in body["seeds"]:
            seen = run["samplesSeen"]
            run["trainFlops"] = seen * flops_per_sample[fam]
            run["stages"] = {
                "target-encoding": {"seconds": 1.0},
                "main": {"seconds": seen / run["samplesPerSecond"]},
            }
    return doc


def sweep_doc() -> dict[str, Any]:
    """token-vlm leads on choosing at 5k samples, vl-jepa at 20k; vl-jepa answers better at
    both; both caption alike at both."""
    docs = []
    for budget, choose in (
        (5000, {"token-vlm": 0.6, "vl-jepa": 0.35}),
        (20000, {"token-vlm": 0.6, "vl-jepa": 0.85}),
    ):
        quality = {
            fam: {"caption_of_10": choose[fam], "vqa_accuracy": vqa, "cider": 2.0}
            for fam, vqa in (("token-vlm", 0.4), ("vl-jepa", 0.7))
        }
        doc = metrics_doc(
            quality, budget=budget, samples_per_second={"token-vlm": 50, "vl-jepa": 100}
        )
        docs.append(with_costs(doc, {"token-vlm": 3e6, "vl-jepa": 1e6}))
    return sweep_document(docs) | {"schema": METRICS_SCHEMA}


def test_a_sweep_report_says_where_one_family_overtakes_the_other():
    sweep = build_report(sweep_doc())["sweep"]
    assert sweep["labels"] == ["5k samples", "20k samples"]
    cases = {c["key"]: c for c in sweep["useCases"]}
    choose = cases["choose"]
    assert [d["winner"] for d in choose["decisions"]] == ["token-vlm", "vl-jepa"]
    assert (choose["crossover"]["kind"], choose["crossover"]["budget"]) == (
        "crossover",
        "20k samples",
    )
    assert (
        "vl-jepa overtakes token-vlm on caption_of_10 at 20k samples, the largest"
        in choose["crossover"]["sentence"]
    )
    assert cases["answer"]["crossover"]["kind"] == "leads-throughout"
    assert cases["describe"]["crossover"]["kind"] == "none"
    # Quality with its interval, against costs that grow with the budget.
    for fam, q in choose["quality"].items():
        assert all(lo <= m <= hi for lo, m, hi in zip(q["low"], q["mean"], q["high"], strict=True))
        costs = sweep["costs"][fam]
        assert costs["samplesSeen"] == [5000, 20000]
        assert costs["trainFlops"][1] == pytest.approx(4 * costs["trainFlops"][0])
        assert costs["trainingSeconds"][0] < costs["trainingSeconds"][1]
    assert sweep["costs"]["token-vlm"]["trainFlops"][0] == pytest.approx(3 * 5000 * 1e6)
    lines = sweep_lines(sweep_of(sweep_doc()))
    assert any(
        "caption_of_10): 5k samples: token-vlm · 20k samples: vl-jepa" in line for line in lines
    )


def test_a_sweep_report_has_its_section_figure_and_summary(tmp_path: Path):
    out = tmp_path / "report"
    cfg = ReportConfig(probes=False, selective=None)
    render_report(sweep_doc(), out, job_dir=tmp_path, probes={}, cfg=cfg)
    page = (out / PAGE_FILE).read_text()
    assert '<section id="sweep">' in page and 'href="#sweep"' in page
    assert "the largest of a sweep over 5k samples, 20k samples" in page
    assert (out / "figures" / "budget_sweep.png").stat().st_size > 10_000
    assert any(
        "overtakes token-vlm on caption_of_10 at 20k samples" in line for line in verdict_lines(out)
    )


def test_a_one_budget_report_has_no_sweep(tmp_path: Path):
    doc = with_costs(
        metrics_doc({"a": {"caption_of_10": 0.6}, "b": {"caption_of_10": 0.4}}),
        {"a": 1.0, "b": 1.0},
    )
    out = tmp_path / "report"
    cfg = ReportConfig(probes=False, selective=None)
    render_report(doc, out, job_dir=tmp_path, probes={}, cfg=cfg)
    report = build_report(doc)
    assert "sweep" not in report
    page = (out / PAGE_FILE).read_text()
    assert 'id="sweep"' not in page and 'href="#sweep"' not in page
    assert "Budget sweep" not in page and "largest of a sweep" not in page
    assert not (out / "figures" / "budget_sweep.png").exists()
    assert list(verdict_lines(out)) == report["verdict"]["summary"]
