"""The versioned `metrics.json` of a job: per family, per seed, final metrics with chance levels
and the learning curve; plus a summary over seeds."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from vlarena.data.manifest import Dataset
from vlarena.evaluation.report.verdict import decision_confidence, primary_metrics
from vlarena.evaluation.statistics import mean_interval, paired_difference

# v2 adds learnedParameters and frozenParameters per family and run, and each run's stages;
# v3 adds `paired`: per metric, the difference between the two families on the same test
# items with its intervals (what the verdict decides from); v4 adds `sweep` where a job trained
# several budgets: per budget, each family's summary and its runs' costs and metrics, and the
# paired differences (the rest of the document is the largest budget's).
METRICS_SCHEMA = "vlarena.metrics/v4"
ItemScores = dict[str, list[float]]  # metric → its per-item scores, one run's


def _summary(seeds: list[dict[str, Any]], items: list[ItemScores | None]) -> dict[str, Any]:
    names = sorted({k for s in seeds for k in s["metrics"]})
    out = {}
    for name in names:
        values = [s["metrics"][name]["value"] for s in seeds if name in s["metrics"]]
        first = next(s["metrics"][name] for s in seeds if name in s["metrics"])
        out[name] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "chance": first["chance"],
            "n": first["n"],
            "seeds": len(values),
        }
        scored = [i[name] for i in items if i and name in i]
        if items and len(scored) == len(items) and len({len(x) for x in scored}) == 1:
            # An accuracy-like metric (it has a binomial standard error) lies in [0, 1];
            # caption scores are at least 0.
            binomial = first.get("stderr") is not None
            bounds = (0.0, 1.0) if binomial else (0.0, np.inf)
            _, low, high = mean_interval(np.array(scored), bounds=bounds)
            out[name]["interval95"] = [low, high]
    return out


def paired_differences(scores: dict[str, list[ItemScores | None]]) -> dict[str, Any]:
    """Per metric, the first family minus the second on the same test items (`scores`: per
    family, each seed's per-item scores), for the metrics every seed of both families scored on
    the same number of items. The use cases' primary metrics get intervals at the corrected
    level their decisions use."""
    families = list(scores)
    if len(families) != 2 or any(s is None for seeds in scores.values() for s in seeds):
        return {}
    scored = [set(s) for seeds in scores.values() for s in seeds if s]
    names = set.intersection(*scored) if scored else set()
    usable = sorted(
        n for n in names if len({len(s[n]) for seeds in scores.values() for s in seeds if s}) == 1
    )
    primaries = set(primary_metrics(usable).values())
    confidence = decision_confidence(len(primaries))
    out = {}
    for name in usable:
        a, b = (np.array([s[name] for s in scores[f] if s]) for f in families)
        diff = paired_difference(
            a,
            b,
            names=(families[0], families[1]),
            confidence=confidence if name in primaries else 0.95,
        )
        out[name] = diff.as_dict() | {"primary": name in primaries}
    return out


def metrics_document(
    dataset: Dataset,
    budget: dict[str, Any],
    runs: list[dict[str, Any]],
    items: list[ItemScores | None] | None = None,
) -> dict[str, Any]:
    """metrics.json of the runs (result records of `train_run`) on `dataset` under `budget`;
    `items`, the runs' per-item scores, give the paired differences between the families."""
    families: dict[str, Any] = {}
    run_items: dict[str, list[ItemScores | None]] = {}
    for r, per_item in zip(runs, items or [None] * len(runs), strict=True):
        run_items.setdefault(r["family"], []).append(per_item)
    for r in runs:
        fam = families.setdefault(
            r["family"],
            {
                "config": r["config"],
                "trainableParameters": r["trainableParameters"],
                "totalParameters": r["totalParameters"],
                "learnedParameters": r["learnedParameters"],
                "frozenParameters": r["frozenParameters"],
                "seeds": [],
            },
        )
        fam["seeds"].append({k: v for k, v in r.items() if k not in ("family", "config")})
    for name, fam in families.items():
        fam["summary"] = _summary(fam["seeds"], run_items[name])
        fam["samplesPerSecond"] = float(np.mean([s["samplesPerSecond"] for s in fam["seeds"]]))
    return {
        "schema": METRICS_SCHEMA,
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": {
            "name": dataset.info.name,
            "manifest": str(dataset.manifest_path),
            "fingerprint": dataset.fingerprint(),
        },
        "budget": budget,
        "families": families,
        "paired": paired_differences(run_items) if items is not None else {},
    }


def _sweep_entry(doc: dict[str, Any]) -> dict[str, Any]:
    """One budget of a sweep: what its verdict and the quality-against-cost figures read."""
    families = {}
    for name, body in doc["families"].items():
        runs = [
            {
                "seed": s["seed"],
                "samplesSeen": s["samplesSeen"],
                "trainFlops": s["trainFlops"],
                # wall-clock of every stage (target encoding, main loop, Y-decoder)
                "trainingSeconds": sum(st["seconds"] for st in s["stages"].values()),
                "metrics": s["metrics"],
            }
            for s in body["seeds"]
        ]
        families[name] = {"summary": body["summary"], "seeds": runs}
    return {"budget": doc["budget"], "families": families, "paired": doc["paired"]}


def sweep_document(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """metrics.json of a budget sweep from each budget's own document, smallest budget first:
    the largest budget's document, with every budget under `sweep`."""
    return docs[-1] | {"sweep": [_sweep_entry(d) for d in docs]}


def summary_values(doc: dict[str, Any]) -> dict[str, float]:
    """`family/metric` → mean over seeds, the job's headline numbers."""
    return {
        f"{fam}/{name}": s["mean"]
        for fam, body in doc["families"].items()
        for name, s in body["summary"].items()
    }
