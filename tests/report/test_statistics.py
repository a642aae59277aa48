"""The verdict's statistics have the properties the report states.

The simulations start from one set of per-item scores fixed by a seed: a model that gets 70%
of 1,000 test items right. A simulated training seed redraws 15% of the items' outcomes (an
item a model gets right under one seed it may miss under another) and shifts the seed's
accuracy by a seed-level effect of 1 point (standard deviation). Decisions use the level of the
verdict on a dataset with three use cases: 95% corrected for three decisions.
"""

from __future__ import annotations

import numpy as np
import pytest

from vlarena.evaluation.report.verdict import decide, decision_confidence, seeds_needed
from vlarena.evaluation.statistics import mean_interval, paired_difference
from vlarena.experiments.results import _summary

ITEMS, SEEDS, SIMULATIONS = 1000, 3, 400
REDRAW, SEED_SD = 0.15, 0.01
CONFIDENCE = decision_confidence(3)


def stored_scores() -> np.ndarray:
    return (np.random.default_rng(2026).random(ITEMS) < 0.7).astype(float)


def family(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SEEDS simulated seeds of a model whose items are right with probabilities `p`."""
    shifts = rng.normal(0, SEED_SD, size=(SEEDS, 1))
    return (rng.random((SEEDS, ITEMS)) < np.clip(p + shifts, 0, 1)).astype(float)


def probabilities(base: np.ndarray, lift: float = 0.0) -> np.ndarray:
    p = base * (1 - REDRAW) + REDRAW * base.mean()
    # A planted effect: every item's chance of a hit rises in proportion to its room to rise,
    # so that the expected accuracy rises by exactly `lift`.
    return p + lift * (1 - p) / (1 - p.mean())


def decided(a: np.ndarray, b: np.ndarray, seed: int) -> int:
    """+1 when a wins, -1 when b wins, 0 when the interval includes zero."""
    d = paired_difference(a, b, confidence=CONFIDENCE, replicates=500, seed=seed)
    return 1 if d.low > 0 else -1 if d.high < 0 else 0


def test_a_family_against_itself_rarely_declares_a_winner():
    p = probabilities(stored_scores())
    wins = 0
    for i in range(SIMULATIONS):
        rng = np.random.default_rng(i)
        wins += decided(family(p, rng), family(p, rng), i) != 0
    assert wins / SIMULATIONS <= 0.07, wins


def test_a_planted_five_point_effect_is_detected():
    base = stored_scores()
    p, lifted = probabilities(base), probabilities(base, 0.05)
    found = 0
    for i in range(SIMULATIONS):
        rng = np.random.default_rng(10_000 + i)
        found += decided(family(lifted, rng), family(p, rng), i) == 1
    assert found / SIMULATIONS >= 0.80, found


def test_the_interval_is_paired_over_items():
    # b is a with one item more right: unpaired, 1,000 binary items vary by ~1.5 points;
    # paired, the difference is exactly one item's, whatever is redrawn
    a = np.tile(stored_scores(), (3, 1))
    b = a.copy()
    b[:, np.flatnonzero(a[0] == 0)[0]] = 1
    d = paired_difference(b, a)
    assert d.difference == pytest.approx(1 / ITEMS)
    assert d.high95 - d.low95 < 0.01
    with pytest.raises(ValueError, match="different items"):
        paired_difference(a, a[:, :-1])


def test_a_familys_interval_stays_within_what_its_metric_can_take():
    # three seeds that spread widely near the ceiling, as a model does while it learns fast:
    # mean ± a t quantile with 2 degrees of freedom passes 100%
    rng = np.random.default_rng(0)
    scores = np.stack([(rng.random(ITEMS) < p).astype(float) for p in (0.79, 0.93, 0.87)])
    mean, low, high = mean_interval(scores)
    assert high > 1.0
    mean, low, high = mean_interval(scores, bounds=(0.0, 1.0))
    assert low < mean < high == 1.0
    metric = {"value": 0.0, "chance": 0.1, "n": ITEMS, "stderr": 0.01}
    seeds = [{"metrics": {"hits": metric, "cider": metric | {"stderr": None}}}] * 3
    # a caption score near 0 whose seeds spread: mean − a t quantile passes below 0
    low_scores = np.stack([(rng.random(ITEMS) < p).astype(float) for p in (0.01, 0.3, 0.01)])
    assert mean_interval(low_scores)[1] < 0.0
    items = [
        {"hits": list(row), "cider": list(low)} for row, low in zip(scores, low_scores, strict=True)
    ]
    summary = _summary(seeds, items)
    assert summary["hits"]["interval95"][1] == 1.0  # an accuracy: within [0, 1]
    assert summary["cider"]["interval95"][0] == 0.0  # a caption score: at least 0
    assert summary["cider"]["interval95"][1] > low_scores.mean()


def _paired(diff: float, half: float, seed_share: float = 0.5) -> dict:
    return {
        "families": ["a", "b"],
        "difference": diff,
        "interval": [diff - half, diff + half],
        "interval95": [diff - half, diff + half],
        "confidence": CONFIDENCE,
        "seeds": [3, 3],
        "seedShare": seed_share,
    }


STATS = {
    "a": {"mean": 0.70, "chance": 0.1, "n": 1000, "seeds": 3},
    "b": {"mean": 0.69, "chance": 0.1, "n": 1000, "seeds": 3},
}


def test_no_clear_winner_splits_into_equal_and_not_enough_evidence():
    seeds = {"a": 3, "b": 3}
    equal = decide("choose", "choosing", "caption_of_10", _paired(0.01, 0.005), STATS, seeds)
    assert equal["outcome"] == "equivalent" and equal["winner"] is None
    assert "equal within ±0.020" in equal["sentence"]
    # the seeds make most of the width: more of them narrow it
    unsure = decide(
        "choose", "choosing", "caption_of_10", _paired(0.01, 0.03, seed_share=0.95), STATS, seeds
    )
    assert unsure["outcome"] == "undecided"
    assert unsure["seedsNeeded"] > 3 and "more seeds per family" in unsure["sentence"]
    # when the items alone leave the interval too wide, more seeds cannot help
    assert seeds_needed(_paired(0.01, 0.03, seed_share=0.0), 0.02) is None
    win = decide("choose", "choosing", "caption_of_10", _paired(0.05, 0.02), STATS, seeds)
    assert win["winner"] == "a" and "use a" in win["sentence"]


def test_fewer_than_three_seeds_give_no_verdict():
    few = decide("choose", "choosing", "caption_of_10", _paired(0.3, 0.01), STATS, {"a": 2, "b": 3})
    assert few["outcome"] == "too-few-seeds" and few["winner"] is None
    assert "at least 3" in few["sentence"]


def test_secondary_metrics_are_listed_under_their_use_case_and_never_decide():
    from vlarena.evaluation.report.verdict import verdict

    names = ("caption_of_10", "hard_caption_of_10", "zeroshot_top1", "zeroshot_balanced")
    summaries = {f: {n: dict(STATS[f]) for n in names} for f in ("a", "b")}
    paired = {"caption_of_10": _paired(0.01, 0.005)}  # equal within the margin
    paired["zeroshot_balanced"] = _paired(0.3, 0.01)  # a clear lead on a secondary metric
    [choose] = verdict(summaries, paired=paired)["useCases"]
    assert choose["primary"] == "caption_of_10" and choose["outcome"] == "equivalent"
    assert {m["metric"] for m in choose["metrics"]} == set(names) - {"caption_of_10"}
