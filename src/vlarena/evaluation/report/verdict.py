"""Which family to use when, decided from the measured numbers of a comparison.

Each use case has one primary metric that decides it; the others are shown, never decide.
The decision reads the paired interval of the primary's difference between the families (the
same test items, resampled over items and seeds; `evaluation.statistics`), at 95% corrected
for the number of use cases decided together (Bonferroni). It is one of:

- a winner, when the interval excludes zero and the winner is above chance;
- "equal within ±δ", when the interval lies inside the equivalence margin δ;
- "not enough evidence", with the number of seeds per family that would narrow the interval
  enough (or the note that only more test items would);
- no verdict, from fewer than `MIN_SEEDS` seeds per family or without per-item scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scipy import stats

# What a user wants done → the metrics (prefixes of metric names) that measure it.
USE_CASES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "choose",
        "choosing among known texts: retrieval, zero-shot classification, caption matching",
        (
            "caption_of_",
            "hard_caption_of_",
            "i2t_r1@",
            "t2i_r1@",
            "zeroshot_top1",
            "zeroshot_balanced",
            "zeroshot_heldout_top1",
            "zeroshot_heldout_balanced",
        ),
    ),
    ("answer", "answering multiple-choice questions about an image", ("vqa_accuracy",)),
    ("describe", "writing free-form captions", ("cider", "bleu4")),
)
# The metric that decides each use case: the first of these names that the comparison has.
PRIMARY: dict[str, tuple[str, ...]] = {
    "choose": ("caption_of_10", "caption_of_"),
    "answer": ("vqa_accuracy",),
    "describe": ("cider",),
}
# A verdict needs the spread between seeds, measured on at least this many per family.
MIN_SEEDS = 3
ALPHA = 0.05
# Equivalence margins: 2 points of an accuracy; 5% of the larger value of a caption score.
EQUIVALENCE_POINTS = 0.02
EQUIVALENCE_RELATIVE = 0.05
# Without seeds to measure spread, caption scores (not binomial) need this relative lead.
RELATIVE_MARGIN = 0.05
# A cost ratio below this reads as "about the same".
COST_RATIO = 1.2


def standard_error(stat: Mapping[str, Any]) -> float | None:
    """A summary statistic's standard error: over seeds where there are several, and never
    below the binomial sampling error of an accuracy-like value over its `n` trials."""
    mean, seeds, n = stat["mean"], stat.get("seeds", 1), stat.get("n") or 0
    seed_se = stat.get("std", 0.0) / math.sqrt(seeds) if seeds > 1 else None
    binomial = (
        math.sqrt(max(mean * (1 - mean), 0.0) / n)
        if n and 0.0 <= mean <= 1.0 and stat.get("binomial", True)
        else None
    )
    known = [v for v in (seed_se, binomial) if v is not None]
    return max(known) if known else None


def _above_chance(stat: Mapping[str, Any]) -> bool:
    chance = stat.get("chance")
    if chance is None:
        return True
    se = standard_error(stat)
    return stat["mean"] > chance + (2 * se if se else 0.0)


def compare_metric(name: str, stats: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The winner of one metric among families ({family: summary stat}), or None for a tie."""
    ranked = sorted(stats, key=lambda f: stats[f]["mean"], reverse=True)
    best, second = ranked[0], ranked[1]
    a, b = stats[best], stats[second]
    diff = a["mean"] - b["mean"]
    se_a, se_b = standard_error(a), standard_error(b)
    if se_a is None or se_b is None:
        margin = RELATIVE_MARGIN * max(abs(a["mean"]), abs(b["mean"]))
    else:
        margin = 2 * math.sqrt(se_a**2 + se_b**2)
    winner = best if diff > margin and _above_chance(a) else None
    return {
        "metric": name,
        "values": {f: s["mean"] for f, s in stats.items()},
        "chance": a.get("chance"),
        "difference": diff,
        "margin": margin,
        "winner": winner,
        "aboveChance": {f: _above_chance(s) for f, s in stats.items()},
    }


def primary_metrics(names: Iterable[str]) -> dict[str, str]:
    """Use case key → its primary metric, for the use cases whose primary is among `names`."""
    present = sorted(set(names))
    out = {}
    for key, candidates in PRIMARY.items():
        for c in candidates:
            found = [n for n in present if n == c or (c.endswith("_") and n.startswith(c))]
            if found:
                out[key] = found[0]
                break
    return out


def decision_confidence(decisions: int) -> float:
    """The interval level of each of `decisions` made together: 95% overall (Bonferroni)."""
    return 1 - ALPHA / max(decisions, 1)


def equivalence_margin(metric: str, values: Mapping[str, float]) -> float:
    """δ: differences within ±δ count as equal."""
    if metric in ("cider", "bleu4"):
        return EQUIVALENCE_RELATIVE * max(abs(v) for v in values.values())
    return EQUIVALENCE_POINTS


def seeds_needed(paired: Mapping[str, Any], margin: float) -> int | None:
    """Seeds per family that would let the decision interval settle the question: exclude
    zero when the difference exceeds the margin, else fit inside ±margin. None when the test
    items alone leave it too wide (more seeds cannot help; more test items would)."""
    diff = abs(paired["difference"])
    low, high = paired["interval"]
    half = (high - low) / 2
    target = diff if diff > margin else margin - diff
    if half <= 0:
        return max(paired["seeds"])
    z = float(stats.norm.ppf(0.5 + paired["confidence"] / 2))
    variance = (half / z) ** 2
    seed_part = paired.get("seedShare", 0.0) * variance
    room = (target / z) ** 2 - (variance - seed_part)
    if room <= 0:
        return None
    seeds = max(paired["seeds"])
    return max(seeds + 1, math.ceil(seeds * seed_part / room))


def decide(
    key: str,
    label: str,
    primary: str,
    paired: Mapping[str, Any] | None,
    stats_by_family: Mapping[str, Mapping[str, Any]],
    seeds: Mapping[str, int],
) -> dict[str, Any]:
    """One use case's decision from its primary metric's paired difference."""
    values = {f: s["mean"] for f, s in stats_by_family.items()}
    shown = ", ".join(f"{f} {_fmt(v)}" for f, v in values.items())
    out: dict[str, Any] = {
        "key": key,
        "label": label,
        "primary": primary,
        "values": values,
        "winner": None,
        "paired": dict(paired) if paired else None,
    }
    fewest = min(seeds.values()) if seeds else 0
    if fewest < MIN_SEEDS:
        out["outcome"] = "too-few-seeds"
        out["sentence"] = (
            f"For {label}: no verdict from {fewest} seed{'s' if fewest != 1 else ''} per family"
            f" (a verdict needs at least {MIN_SEEDS}; {primary}: {shown})."
        )
        return out
    if paired is None:
        out["outcome"] = "no-item-scores"
        out["sentence"] = (
            f"For {label}: no verdict, the runs kept no per-item scores of {primary} to pair"
            f" ({shown})."
        )
        return out
    a, b = paired["families"]
    low, high = paired["interval"]
    level = f"{paired['confidence']:.1%}"
    margin = equivalence_margin(primary, values)
    out["margin"] = margin
    interval = (
        f"{a} − {b} = {_fmt(paired['difference'])}, {level} interval [{_fmt(low)}, {_fmt(high)}]"
    )
    # A difference surely smaller than the margin is equality in practice, even where the
    # interval excludes zero.
    if -margin < low and high < margin:
        out["outcome"] = "equivalent"
        out["sentence"] = (
            f"For {label}, the families are equal within ±{_fmt(margin)} on {primary} ({shown};"
            f" {interval})."
        )
        return out
    if low > 0 or high < 0:
        winner = a if low > 0 else b
        if _above_chance(stats_by_family[winner]):
            out.update(outcome="winner", winner=winner)
            out["sentence"] = f"For {label}, use {winner}: {primary} {shown}; {interval}."
            return out
        out["outcome"] = "below-chance"
        out["sentence"] = (
            f"For {label}, neither family is above chance at this budget ({primary}: {shown})."
        )
        return out
    out["outcome"] = "undecided"
    needed = seeds_needed(paired, margin)
    out["seedsNeeded"] = needed
    advice = (
        f"run about {needed - fewest} more seed{'s' if needed - fewest != 1 else ''} per family"
        if needed is not None
        else "more seeds alone would not settle it: score more test items"
    )
    out["sentence"] = (
        f"For {label}, not enough evidence to choose ({interval}, which neither excludes zero nor"
        f" lies within ±{_fmt(margin)}): {advice}."
    )
    return out


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or (p.endswith(("_", "@")) and name.startswith(p)) for p in prefixes)


def _majority(results: list[dict[str, Any]]) -> str | None:
    """The family that wins more metrics than any other (ties ignored), else None."""
    wins: dict[str, int] = {}
    for r in results:
        if r["winner"]:
            wins[r["winner"]] = wins.get(r["winner"], 0) + 1
    if not wins:
        return None
    ordered = sorted(wins.items(), key=lambda kv: kv[1], reverse=True)
    if len(ordered) > 1 and ordered[0][1] == ordered[1][1]:
        return None
    return ordered[0][0]


def _fmt(value: float) -> str:
    if abs(value) < 10:
        return f"{value:.3f}"
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:,.0f}"


# aspect → (label, higher is better, unit, what the winner does)
ASPECTS: dict[str, tuple[str, bool, str, str]] = {
    "samplesPerSecond": ("Training throughput", True, "samples/s", "trains {r}× faster"),
    "captionMs": ("Caption latency at batch 1", False, "ms", "captions {r}× faster"),
    "classifyMs": (
        "Zero-shot classification latency at batch 1",
        False,
        "ms",
        "classifies {r}× faster",
    ),
    "learnedParameters": ("Parameters learned", False, "", "learns {r}× fewer parameters"),
}


def _ratio_fact(aspect: str, values: Mapping[str, float | None]) -> dict[str, Any] | None:
    """The cheaper family on one cost aspect when it is ≥ COST_RATIO cheaper, else a draw."""
    label, higher, unit, does = ASPECTS[aspect]
    known = {f: float(v) for f, v in values.items() if v}
    if len(known) < 2:
        return None
    ranked = sorted(known, key=known.__getitem__, reverse=higher)
    best, worst = ranked[0], ranked[-1]
    ratio = known[best] / known[worst] if higher else known[worst] / known[best]
    winner = best if ratio >= COST_RATIO else None
    shown = ", ".join(f"{f} {_fmt(v)}{' ' + unit if unit else ''}" for f, v in known.items())
    sentence = (
        f"{label}: {winner} {does.format(r=f'{ratio:.1f}')} ({shown})."
        if winner
        else f"{label}: about the same ({shown})."
    )
    return {
        "aspect": aspect,
        "label": label,
        "values": known,
        "ratio": ratio,
        "winner": winner,
        "sentence": sentence,
    }


def verdict(
    summaries: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    paired: Mapping[str, Mapping[str, Any]] | None = None,
    early: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    early_samples: int | None = None,
    costs: Mapping[str, Mapping[str, float | None]] | None = None,
) -> dict[str, Any]:
    """Which family to use when.

    `summaries`: per family, the metrics.json summary ({metric: {mean, std, chance, n, seeds}});
    `paired`: per metric, the paired difference between the families (metrics.json `paired`);
    `early`: the same shape as `summaries` at the smallest budget of the learning curves
    (`early_samples`); `costs`: per aspect ("samplesPerSecond", "captionMs", ...), a value per
    family.
    """
    families = list(summaries)
    if len(families) < 2:
        return {
            "families": families,
            "useCases": [],
            "efficiency": [],
            "summary": ["Only one family was trained: nothing to compare."],
        }
    shared = sorted(set.intersection(*(set(s) for s in summaries.values())))
    primaries = primary_metrics(shared)
    paired = paired or {}
    seeds = {
        f: int(min((s.get("seeds", 1) for s in summaries[f].values()), default=0)) for f in families
    }
    use_cases = []
    for key, label, prefixes in USE_CASES:
        primary = primaries.get(key)
        if primary is None:
            continue
        case = decide(
            key,
            label,
            primary,
            paired.get(primary),
            {f: summaries[f][primary] for f in families},
            seeds,
        )
        # The other metrics of the use case, with their 95% intervals: shown, never deciding.
        case["metrics"] = [
            {
                "metric": name,
                "values": {f: summaries[f][name]["mean"] for f in families},
                "interval95": (paired.get(name) or {}).get("interval95"),
            }
            for name in shared
            if _matches(name, prefixes) and name != primary
        ]
        use_cases.append(case)

    efficiency = []
    if early:
        early_shared = sorted(set.intersection(*(set(s) for s in early.values())) - {"loss"})
        results = [compare_metric(n, {f: early[f][n] for f in families}) for n in early_shared]
        winner = _majority(results)
        where = f" ({early_samples:,} samples)" if early_samples else ""
        efficiency.append(
            {
                "aspect": "lowBudget",
                "label": "at the smallest budget measured",
                "winner": winner,
                "metrics": results,
                "sentence": (
                    f"On a small training budget{where}, {winner} learns faster."
                    if winner
                    else f"On a small training budget{where}, neither family is clearly ahead."
                ),
            }
        )
    for aspect, values in (costs or {}).items():
        fact = _ratio_fact(aspect, values) if aspect in ASPECTS else None
        if fact:
            efficiency.append(fact)
    summary = [u["sentence"] for u in use_cases] + [e["sentence"] for e in efficiency]
    return {
        "families": families,
        "useCases": use_cases,
        "efficiency": efficiency,
        "summary": summary,
    }
