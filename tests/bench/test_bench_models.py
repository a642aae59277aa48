"""The model benchmark's own logic: swapped captions, row specs, the table and its floors."""

from __future__ import annotations

import re

from rich.console import Console
from tests.report.synthetic import metrics_doc

from vlarena.bench import models as bench


def test_swapped_exchanges_the_first_two_different_items() -> None:
    caption = "a bag top left, a bag top right, a shirt bottom left, a coat bottom right"
    assert bench.swapped(caption) == (
        "a shirt top left, a bag top right, a bag bottom left, a coat bottom right"
    )
    assert bench.swapped("a bag top left, a bag top right") is None
    assert bench.swapped("a smiling face") is None


def test_compare_specs_are_valid_jobs_with_the_benchmarks_design() -> None:
    from vlarena.jobs.spec import CompareJobSpec, parse_job_spec

    spec = bench.compare_spec(bench.COMPARISONS["fashion-pretrained"])
    typed = parse_job_spec(spec)
    assert isinstance(typed, CompareJobSpec)
    assert [b.samples for b in typed.all_budgets] == [5_000, 20_000]
    assert typed.seeds == 3 and spec["evaluation"]["maxImages"] == 1000
    assert typed.model is not None
    assert typed.model.for_family("token-vlm")["text_prior"] == "pretrained"
    assert typed.model.for_family("vl-jepa")["preset"] == "small"
    # one budget is a plain compare; --quick cuts budgets and items to a tenth (min 1,024)
    one = bench.compare_spec(bench.COMPARISONS["fashion-80k"], quick=True)
    assert one["budget"] == {"samples": 8_000} and "budgets" not in one
    assert one["evaluation"]["maxImages"] == 100
    assert bench.compare_spec(bench.COMPARISONS["emoji-pretrained"], quick=True)["budgets"][0] == {
        "samples": 1024
    }
    scratch = bench.COMPARISONS["fashion-scratch"]["families"]
    assert {c["text_prior"] for c in scratch.values()} == {"scratch"}
    # the 80k comparison runs last: it is the one cut when the set does not fit
    assert list(bench.COMPARISONS)[-1] == "fashion-80k"


def test_the_floor_run_trains_vl_jepa_alone_as_the_prototype_was() -> None:
    from vlarena.jobs.spec import CompareJobSpec, parse_job_spec

    spec = bench.compare_spec(bench.FLOOR)
    typed = parse_job_spec(spec)
    assert isinstance(typed, CompareJobSpec)
    assert spec["families"] == ["vl-jepa"] and typed.seeds == 1
    assert spec["budget"] == {"samples": 100_000}
    assert spec["hyperparameters"] == {"batchSize": 128, "vqaFraction": 0.0}
    assert spec["evaluation"]["maxImages"] == 2000
    assert spec["evaluation"]["retrievalPools"] == [100, 1000]
    # the comparisons keep the platform's defaults: batch 64, VQA samples included
    assert bench.compare_spec(bench.COMPARISONS["fashion-80k"])["hyperparameters"] == {
        "batchSize": 64
    }
    quick = bench.compare_spec(bench.FLOOR, quick=True)
    assert quick["budget"] == {"samples": 10_000}
    assert quick["evaluation"]["retrievalPools"] == [100]


def test_comparison_prints_intervals_differences_verdicts_and_crossovers(capsys) -> None:
    quality = {
        "token-vlm": {"caption_of_10": 0.60, "cider": 0.5},
        "vl-jepa": {"caption_of_10": 0.70, "cider": 0.4},
    }
    small = metrics_doc(quality, budget=5000)
    large = metrics_doc(quality, budget=20000)
    result = {"metrics": large, "budgets": [small, large], "seconds": 90.0}
    printed = bench.comparison_lines("fashion-pretrained", result, Console(width=250))
    out = capsys.readouterr().out
    assert set(printed["budgets"]) == {"5k samples", "20k samples"}
    assert "true caption among 10" in out
    # token − jepa on caption choice, in points, with its paired interval
    assert re.search(r"-1\d\.\d \[-1\d\.\d, -\d+\.\d\]", out)
    assert any("vl-jepa" in line for line in printed["budgets"]["20k samples"]["verdict"])
    assert "wall-clock 1.5 min" in out


def test_floors_report_misses_and_count_a_missing_value_as_missed(capsys) -> None:
    metrics = {"i2t_r1@100": {"value": 0.80}, "i2t_r1@1000": {"value": 0.414}}
    assert bench.floor_lines(metrics, Console()) == ["i2t_r1@1000"]
    assert "≥ 41.5%: 41.4% MISSED" in capsys.readouterr().out
    assert bench.floor_lines(None, Console()) == ["i2t_r1@100", "i2t_r1@1000"]


def _selective(selective: float | None, raw: float | None) -> dict:
    rate = {"every": 2, "cider": 5.0, "uniformDecodes": 32}
    return {
        "streams": 64,
        "framesPerStream": 64,
        "trueSegmentsPerStream": 6.4,
        "everyFrameCider": 1.2,
        "chanceCider": 0.1,
        "ratioVsEveryFrame": 5.0,
        "headline": {
            "paper": 2.85,
            "selective": {"ratio": selective, "rates": [rate | {"decodes": 6.6}]},
            "rawFeature": {"ratio": raw, "rates": [rate | {"decodes": None}]},
        },
    }


def test_selective_decoding_floor_is_beating_raw_feature_segmentation(capsys) -> None:
    assert bench.selective_lines(_selective(3.1, 1.4), Console(width=250)) == []
    out = capsys.readouterr().out
    assert "selective 3.10× (paper 2.85×), raw-feature segmentation 1.40×" in out
    assert "5.00× fewer decodes than every frame" in out and "met" in out
    # below the baseline, a ratio never reached, or no measurement at all: the floor is missed
    assert bench.selective_lines(_selective(1.2, 1.4), Console()) == [bench.SELECTIVE_FLOOR]
    assert "1/2   uniform CIDEr 5.000 in 32 decodes: selective 6.6, raw feature never" in out
    assert bench.selective_lines(_selective(None, 1.4), Console()) == [bench.SELECTIVE_FLOOR]
    # a baseline that never reaches some rate is beaten by a curve that reaches them all
    assert bench.selective_lines(_selective(2.4, None), Console()) == []
    assert "not reached" in capsys.readouterr().out
    assert bench.selective_lines(None, Console()) == [bench.SELECTIVE_FLOOR]


def test_floor_selective_runs_on_the_floor_model_and_is_reused_while_it_holds(
    tmp_path, tiny_compare, monkeypatch
) -> None:
    from tests.conftest import TINY_DATA

    from vlarena.evaluation.report import selective as module

    monkeypatch.setattr(bench, "FASHION", TINY_DATA)
    floor = tmp_path / bench.FLOOR_NAME  # the tiny compare job's VL-JEPA stands in its place
    floor.mkdir()
    for name in ("metrics.json", "vl-jepa"):
        (floor / name).symlink_to(tiny_compare["workdir"] / name)
    said: list[str] = []
    result = bench.floor_selective(tmp_path, True, said.append)
    assert result["streams"] == 8 and result["seconds"] > 0
    assert result["headline"]["paper"] == 2.85 and said == ["floor: selective decoding, 8 streams"]

    def again(*args, **kwargs):
        raise AssertionError("a kept measurement of the same model is not run again")

    monkeypatch.setattr(module, "selective_decoding", again)
    assert bench.floor_selective(tmp_path, True, said.append) == result
    kept = tmp_path / bench.FLOOR_NAME / "selective.json"
    assert kept.exists() and len(said) == 1
