"""The model benchmark's own logic: swapped captions, row specs, the table and its floors."""

from __future__ import annotations

from vlarena.bench import models as bench


def test_swapped_exchanges_the_first_two_different_items() -> None:
    caption = "a bag top left, a bag top right, a shirt bottom left, a coat bottom right"
    assert bench.swapped(caption) == (
        "a shirt top left, a bag top right, a bag bottom left, a coat bottom right"
    )
    assert bench.swapped("a bag top left, a bag top right") is None
    assert bench.swapped("a smiling face") is None


def test_row_specs_scale_the_budget_and_keep_the_shared_settings() -> None:
    spec = bench.row_spec(bench.ROWS["jepa-noquery"], 0.1)
    assert spec["budget"] == {"samples": 10_000}
    assert spec["hyperparameters"]["vqaFraction"] == 0.0
    assert spec["model"] == {"family": "vl-jepa", "config": {"preset": "small"}}
    assert spec["export"] is False
    full = bench.row_spec(bench.ROWS["token-full"], 1.0)
    assert full["model"]["config"] == {"preset": "small", "vocabulary": "full"}


def _record(params: int, values: dict[str, float]) -> dict:
    return {
        "trainableParameters": params,
        "samplesSeen": 1000,
        "samplesPerSecond": 100.0,
        "metrics": {
            k: {"value": v, "chance": 0.1, "n": 1000, "z": 20.0} for k, v in values.items()
        },
    }


def test_table_reports_missed_floors_and_parameter_ratios(capsys) -> None:
    results = {
        "token-caption": _record(2_000_000, {"caption_of_10": 0.995, "zeroshot_top1": 0.5}),
        "token-full": _record(10_000_000, {"caption_of_10": 0.99}),
        "jepa-query": _record(2_500_000, {"caption_of_10": 0.95, "i2t_r1@100": 0.8}),
        "jepa-noquery": _record(2_500_000, {"caption_of_10": 0.95, "i2t_r1@1000": 0.414}),
    }
    probe = {"pairs": 3, "cosine": {"MiniLM (raw)": 0.99}, "preferTrue": {"jepa-query": 0.6}}
    missed = bench.print_table(results, probe)
    out = capsys.readouterr().out
    assert "token-caption zeroshot_top1" in missed and "token-caption caption_of_10" not in missed
    assert "jepa-noquery zeroshot_top1" in missed  # no value is a miss, not a pass
    assert "jepa-noquery i2t_r1@1000" in missed and "≥ 41.5%: 41.4% MISSED" in out
    assert "jepa-noquery caption_of_10" not in missed
    assert "0.25×" in out and "1.25×" in out
    assert "prefers the true caption 60.0%" in out


def test_cider_is_shown_raw_even_below_one_and_rates_in_percent() -> None:
    metric = {"value": 0.547, "chance": 0.123, "z": None}
    assert bench._cell(metric, raw=True) == "0.55 (0.12)"
    assert bench._cell({"value": 0.5, "chance": 0.1, "z": 2.0}) == "50.0 (10.0)!"
    assert bench._cell(None) == "-"
