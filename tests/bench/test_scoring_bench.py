"""The scoring benchmark's pieces, on a tiny model: both scorers timed side by side, agreeing."""

from __future__ import annotations

import pytest

from vlarena.bench import limits, scoring


def test_captions_are_distinct_fashion_grid_captions():
    caps = scoring.fashion_captions(300)
    assert len(set(caps)) == 300
    assert all(c.count(",") == 3 and c.endswith("bottom right") for c in caps)


@pytest.mark.parametrize("name", ["caption-choice", "retrieval-100"])
def test_a_workload_times_both_scorers_and_checks_they_agree(name):
    caps = scoring.fashion_captions(120)
    model = scoring.token_vlm("captions", caps, preset="tiny")
    r = scoring.workload(model, name, images=3, captions=caps, rounds=2, peak=1e11)
    assert r["agrees"] and r["maxAbsDifference"] <= scoring.TOLERANCE
    assert r["pairs"] == 3 * (10 if name == "caption-choice" else 100)
    assert r["speedup"]["n"] == 2 and r["speedup"]["low"] <= r["speedup"]["median"]
    assert r["flopsPerPair"]["pairs"] > 0 and 0 < r["utilisation"]["pairs"] < 1
    # At the whole peak the tree could run 1 / MFU times faster than it did.
    ceiling = r["speedupAtPeak"] * r["utilisation"]["tree"]
    tree_over_pairs = r["pairsPerSecond"]["tree"]["median"] / r["pairsPerSecond"]["pairs"]["median"]
    assert ceiling == pytest.approx(tree_over_pairs)


def test_the_pool_of_1000_extrapolates_from_fewer_images_and_counts_its_flops():
    caps = scoring.fashion_captions(1000)
    pool = scoring.pool_run(caps, images=1, preset="tiny", peak=1e11)
    assert pool["extrapolated"]
    assert pool["secondsFor1000"] == pytest.approx(pool["seconds"] * 1000)
    # Counted on one image and two, extrapolated to 1,000: the same as counting three images
    # and adding 997 times the third's share.
    model = scoring.token_vlm("captions", caps, preset="tiny")
    memory = scoring._memory(model, 3)
    counts = [
        scoring.count_flops(lambda n=n: model.text.score(memory[:n], caps))[1] for n in (2, 3)
    ]
    assert pool["flopsFor1000"] == counts[1] + 997 * (counts[1] - counts[0])
    assert pool["secondsAtPeak"] == pytest.approx(pool["flopsFor1000"] / 1e11)
    assert 0 < pool["utilisation"] < 1


def test_limits_are_measured_once_per_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "GEMM_SIZE", 256)
    monkeypatch.setattr(limits, "COPY_BYTES", 8 * 2**20)
    first = limits.load_limits(tmp_path, rounds=2)
    assert limits.peak_flops(first) > 1e8  # even a slow CPU multiplies 0.1 GFLOP/s
    assert (tmp_path / limits.LIMITS_FILE).exists()
    calls = []
    monkeypatch.setattr(limits, "measure", lambda rounds: calls.append(rounds) or first)
    assert limits.load_limits(tmp_path) == first and calls == []  # read back, not measured
    text = limits.report(first)
    assert "GEMM fp32" in text and "memory copy" in text


def test_the_training_bench_measures_a_step_and_where_its_time_goes():
    from vlarena.bench import training

    assert training._category("aten::addmm") == "matrix products"
    assert training._category("aten::_foreach_mul_") == "optimiser"
    assert training._category("aten::gelu") == "element-wise and other"
    [(stage, step, batch)] = training.family_steps("token-vlm", batch=4)
    r = training.measure(stage, step, batch, steps=1, rounds=2, peak=1e11)
    assert r["stage"] == "main" and r["flopsPerSample"] > 0
    assert 0 < r["mfu"] < 1 and r["mfuInterval"][0] <= r["mfu"] <= r["mfuInterval"][1]
    assert abs(sum(r["profile"].values()) - 1) < 1e-6 and "matrix products" in r["profile"]
