"""A budget sweep read per use case: the verdict at each budget, where one family overtakes the
other, and each family's primary metric against samples seen, training FLOPs and wall-clock.

A crossover is the smallest budget from which one family is decided better at every larger
budget of the sweep, where below it the other family was decided better or neither was. A
family decided better at every budget, or at none from the largest down, makes no crossover in
the range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vlarena.evaluation.report.verdict import verdict

# The cost axes of the quality figures: the run field averaged over seeds → its axis title.
COST_AXES: dict[str, str] = {
    "samplesSeen": "samples seen",
    "trainFlops": "training FLOPs (every stage)",
    "trainingSeconds": "training wall-clock (s, every stage)",
}
# Outcomes that decide nothing about either family, whatever the numbers.
NO_VERDICT = ("too-few-seeds", "no-item-scores")
SHORT_OUTCOMES = {
    "equivalent": "equal",
    "undecided": "undecided",
    "below-chance": "below chance",
    "too-few-seeds": "no verdict",
    "no-item-scores": "no verdict",
}


def budget_label(budget: Mapping[str, int]) -> str:
    """{"samples": 20000} → "20k samples"."""
    unit, amount = next(iter(budget.items()))
    for factor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if amount >= factor:
            return f"{amount / factor:g}{suffix} {unit}"
    return f"{amount} {unit}"


def budget_range(labels: Sequence[str]) -> str:
    """["5k samples", "20k samples"] → "5k–20k samples"."""
    first, last = labels[0].split(" "), labels[-1].split(" ")
    return f"{first[0]}–{labels[-1]}" if first[1] == last[1] else f"{labels[0]}–{labels[-1]}"


def _listed(labels: Sequence[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def crossover(
    label: str, primary: str, budgets: Sequence[str], cases: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Where one family overtakes the other on a use case, from its decision at each budget
    (`cases`, the verdict's use case entries, smallest budget first), said in a sentence."""
    winners = [c["winner"] for c in cases]
    span = budget_range(budgets)
    out: dict[str, Any] = {"kind": "none", "family": None, "budget": None}
    if all(c["outcome"] in NO_VERDICT for c in cases):
        reason = (
            "fewer seeds per family than a verdict needs"
            if cases[-1]["outcome"] == "too-few-seeds"
            else "the runs kept no per-item scores to pair"
        )
        out["sentence"] = f"For {label}: no verdict at any budget ({reason}), so no crossover."
        return out
    leader = winners[-1]
    if leader is None:
        led = {
            f: [b for b, w in zip(budgets, winners, strict=True) if w == f]
            for f in dict.fromkeys(w for w in winners if w)
        }
        earlier = "; ".join(f"{f} was ahead at {_listed(at)}" for f, at in led.items())
        out["sentence"] = (
            f"For {label}, no crossover in the range {span}: neither family is decided better "
            f"on {primary} at {budgets[-1]}" + (f" ({earlier})." if earlier else ".")
        )
        return out
    start = len(winners) - 1
    while start > 0 and winners[start - 1] == leader:
        start -= 1
    if start == 0:
        out.update(kind="leads-throughout", family=leader)
        out["sentence"] = (
            f"For {label}, no crossover in the range {span}: {leader} is decided better on "
            f"{primary} at every budget."
        )
        return out
    below = list(zip(budgets[:start], winners[:start], strict=True))
    rivals = list(dict.fromkeys(w for _, w in below if w not in (None, leader)))
    parts = [f"{r} was ahead at {_listed([b for b, w in below if w == r])}" for r in rivals]
    undecided = [b for b, w in below if w is None]
    if undecided:
        parts.append(f"neither family was decided better at {_listed(undecided)}")
    if ahead := [b for b, w in below if w == leader]:
        parts.append(f"{leader} was also ahead at {_listed(ahead)}")
    verb = f"overtakes {_listed(rivals)}" if rivals else "pulls ahead"
    stays = (
        f" and stays ahead up to {budgets[-1]}"
        if start < len(budgets) - 1
        else ", the largest budget of the sweep"
    )
    out.update(kind="crossover", family=leader, budget=budgets[start])
    out["sentence"] = (
        f"For {label}, {leader} {verb} on {primary} at {budgets[start]}{stays}; {'; '.join(parts)}."
    )
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _interval(stat: Mapping[str, Any]) -> tuple[float, float]:
    """Over items and seeds where the runs kept per-item scores, else ±1 std over seeds."""
    if "interval95" in stat:
        low, high = stat["interval95"]
        return low, high
    return stat["mean"] - stat["std"], stat["mean"] + stat["std"]


def budget_sweep(
    entries: Sequence[Mapping[str, Any]], summaries: Sequence[Mapping[str, Mapping[str, Any]]]
) -> dict[str, Any]:
    """The report's sweep: `entries`, metrics.json's `sweep` (smallest budget first), and
    `summaries`, each entry's families' summaries as the verdict reads them."""
    labels = [budget_label(e["budget"]) for e in entries]
    verdicts = [verdict(s, paired=e["paired"]) for e, s in zip(entries, summaries, strict=True)]
    families = list(entries[-1]["families"])
    costs = {
        f: {
            axis: [_mean([s.get(axis) for s in e["families"][f]["seeds"]]) for e in entries]
            for axis in COST_AXES
        }
        for f in families
    }
    use_cases = []
    for case in verdicts[-1]["useCases"]:
        per_budget = [c for v in verdicts for c in v["useCases"] if c["key"] == case["key"]]
        if len(per_budget) < len(verdicts):  # a use case that a smaller budget did not measure
            continue
        primary = case["primary"]
        quality = {}
        for f in families:
            stats = [e["families"][f]["summary"][primary] for e in entries]
            intervals = [_interval(s) for s in stats]
            quality[f] = {
                "mean": [s["mean"] for s in stats],
                "low": [low for low, _ in intervals],
                "high": [high for _, high in intervals],
            }
        use_cases.append(
            {
                "key": case["key"],
                "label": case["label"],
                "primary": primary,
                "quality": quality,
                "decisions": [
                    {"budget": b} | {k: c[k] for k in ("outcome", "winner", "sentence")}
                    for b, c in zip(labels, per_budget, strict=True)
                ],
                "crossover": crossover(case["label"], primary, labels, per_budget),
            }
        )
    return {
        "budgets": [dict(e["budget"]) for e in entries],
        "labels": labels,
        "families": families,
        "costs": costs,
        "useCases": use_cases,
        "summary": [u["crossover"]["sentence"] for u in use_cases],
    }


def quality_points(
    sweep: Mapping[str, Any], case: Mapping[str, Any], family: str, axis: str
) -> dict[str, list[Any]]:
    """One family's line of a use case's figure against a cost axis: per budget whose cost was
    measured, the cost (x), the primary metric's mean with its interval, and the budget."""
    xs = sweep["costs"][family][axis]
    quality = case["quality"][family]
    kept = [i for i, x in enumerate(xs) if x is not None]
    return {
        "x": [xs[i] for i in kept],
        "mean": [quality["mean"][i] for i in kept],
        "low": [quality["low"][i] for i in kept],
        "high": [quality["high"][i] for i in kept],
        "budget": [sweep["labels"][i] for i in kept],
    }


def sweep_lines(sweep: Mapping[str, Any]) -> list[str]:
    """The sweep as text: per use case, the decision at each budget, then its crossover."""
    lines = [f"Budget sweep over {', '.join(sweep['labels'])}:"]
    for case in sweep["useCases"]:
        steps = " · ".join(
            f"{d['budget']}: {d['winner'] or SHORT_OUTCOMES[d['outcome']]}"
            for d in case["decisions"]
        )
        lines.append(f"- {case['label']} ({case['primary']}): {steps}")
        lines.append(f"  {case['crossover']['sentence']}")
    return lines
