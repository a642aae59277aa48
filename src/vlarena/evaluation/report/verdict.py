"""Which family to use when, decided from the measured numbers of a comparison: a family wins
a metric only when it leads by more than twice the combined standard error and beats chance."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# What a user wants done → the metrics (prefixes of metric names) that measure it.
USE_CASES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "choose",
        "choosing among known texts: retrieval, zero-shot classification, caption matching",
        ("caption_of_", "i2t_r1@", "t2i_r1@", "zeroshot_top1"),
    ),
    ("answer", "answering multiple-choice questions about an image", ("vqa_accuracy",)),
    ("describe", "writing free-form captions", ("cider", "bleu4")),
)
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
    early: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    early_samples: int | None = None,
    costs: Mapping[str, Mapping[str, float | None]] | None = None,
) -> dict[str, Any]:
    """Which family to use when.

    `summaries`: per family, the metrics.json summary ({metric: {mean, std, chance, n, seeds}});
    `early`: the same shape at the smallest budget of the learning curves (`early_samples`);
    `costs`: per aspect ("samplesPerSecond", "captionMs", ...), a value per family.
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
    use_cases = []
    for key, label, prefixes in USE_CASES:
        results = [
            compare_metric(name, {f: summaries[f][name] for f in families})
            for name in shared
            if _matches(name, prefixes)
        ]
        if not results:
            continue
        winner = _majority(results)
        leads = [r for r in results if r["winner"] == winner] if winner else []
        evidence = "; ".join(
            f"{r['metric']} {' vs '.join(_fmt(r['values'][f]) for f in [winner, *[g for g in families if g != winner]])}"
            for r in leads
        )
        if winner:
            sentence = f"For {label}, use {winner} ({evidence})."
        elif all(not any(r["aboveChance"].values()) for r in results):
            sentence = f"For {label}, neither family is above chance at this budget."
        else:
            sentence = f"For {label}, the families are within measurement error of each other."
        use_cases.append(
            {"key": key, "label": label, "winner": winner, "metrics": results, "sentence": sentence}
        )

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
