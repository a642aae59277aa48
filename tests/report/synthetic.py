"""Synthetic metrics.json documents: any number of families and seeds, with chosen means."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from vlarena.experiments.results import paired_differences

CHANCE = {
    "caption_of_10": 0.1,
    "i2t_r1@100": 0.01,
    "t2i_r1@100": 0.01,
    "zeroshot_top1": 0.1,
    "vqa_accuracy": 0.1,
    "cider": 1.6,
    "bleu4": 0.3,
}
BINOMIAL_N = {
    "caption_of_10": 1000,
    "i2t_r1@100": 100,
    "t2i_r1@100": 100,
    "zeroshot_top1": 4000,
    "vqa_accuracy": 4000,
}
CURVE_METRICS = ("caption_of_10", "zeroshot_top1", "vqa_accuracy")


def _metric(name: str, value: float) -> dict[str, Any]:
    n = BINOMIAL_N.get(name, 200)
    chance = CHANCE[name]
    if name in BINOMIAL_N:
        se = math.sqrt(chance * (1 - chance) / n)
        return {"value": value, "chance": chance, "n": n, "stderr": se, "z": (value - chance) / se}
    return {"value": value, "chance": chance, "n": n, "stderr": None, "z": None}


def metrics_doc(
    quality: dict[str, dict[str, float]],
    *,
    seeds: int = 3,
    jitter: float = 0.01,
    samples_per_second: dict[str, float] | None = None,
    latency_ms: dict[str, float] | None = None,
    params: dict[str, int] | None = None,
    budget: int = 20000,
    points: int = 4,
    items: int = 400,
) -> dict[str, Any]:
    """A vlarena.metrics/v3 document: per family, `seeds` runs whose final metrics scatter by
    `jitter` around `quality[family][metric]`, with learning curves rising to them, and per-item
    scores on `items` shared test items (an item's difficulty is the same for every family and
    seed) from which the paired differences are computed."""
    rng = np.random.default_rng(0)
    difficulty = np.random.default_rng(1).random(items)
    families = {}
    for fam, means in quality.items():
        runs = []
        for k in range(seeds):
            values = {
                m: float(v + (rng.normal(0, jitter) if seeds > 1 else 0.0))
                for m, v in means.items()
            }
            curve = []
            for p in range(1, points + 1):
                frac = p / points
                point = {
                    "samplesSeen": budget * p // points,
                    "step": 10 * p,
                    "loss": 2.0 / (1 + 3 * frac) + 0.01 * k,
                }
                for m in CURVE_METRICS:
                    if m in values:
                        point[m] = CHANCE[m] + (values[m] - CHANCE[m]) * frac
                curve.append(point)
            runs.append(
                {
                    "seed": k,
                    "samplesSeen": budget,
                    "steps": 10 * points,
                    "samplesPerSecond": (samples_per_second or {}).get(fam, 100.0) * (1 + 0.01 * k),
                    "trainSeconds": 10.0,
                    "evalSeconds": 1.0,
                    "finalLoss": 0.5,
                    "latencyMsPerImage": (latency_ms or {}).get(fam, 10.0),
                    "metrics": {m: _metric(m, v) for m, v in values.items()},
                    "curve": curve,
                    "samples": [
                        {"id": "test-000000", "generated": f"{fam} says hi", "references": ["hi"]}
                    ],
                    "model": "model.pt",
                    # Not a metrics.json field: the run's item-scores.json, kept for `swapped`.
                    "itemScores": {m: _items(m, v, difficulty) for m, v in values.items()},
                }
            )
        summary = {}
        for m in means:
            vals = [r["metrics"][m]["value"] for r in runs]
            summary[m] = {
                "mean": float(np.mean(vals)),
                "std": float(np.std(vals, ddof=1)) if seeds > 1 else 0.0,
                "chance": CHANCE[m],
                "n": BINOMIAL_N.get(m, 200),
                "seeds": seeds,
            }
        families[fam] = {
            "config": {"d_model": 64},
            "trainableParameters": (params or {}).get(fam, 100_000),
            "totalParameters": (params or {}).get(fam, 100_000) + 4_000_000,
            "samplesPerSecond": float(np.mean([r["samplesPerSecond"] for r in runs])),
            "seeds": runs,
            "summary": summary,
        }
    doc = {
        "schema": "vlarena.metrics/v3",
        "createdAt": "2026-01-01T00:00:00Z",
        "dataset": {
            "name": "fashion-grid",
            "manifest": "/nowhere/manifest.jsonl",
            "fingerprint": "0" * 16,
        },
        "budget": {"samples": budget},
        "families": families,
    }
    return _with_paired(doc)


def _items(name: str, value: float, difficulty: np.ndarray) -> list[float]:
    """Per-item scores averaging `value`: hits on the items easier than it (an accuracy), or a
    caption score spread around it."""
    if name in BINOMIAL_N:
        return (difficulty < value).astype(float).tolist()
    return (value * 2 * difficulty + value * (1 - difficulty.mean() * 2)).tolist()


def _with_paired(doc: dict[str, Any]) -> dict[str, Any]:
    doc["paired"] = paired_differences(
        {fam: [s["itemScores"] for s in body["seeds"]] for fam, body in doc["families"].items()}
    )
    return doc


def swapped(doc: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    """The same document with the measurements of families `a` and `b` exchanged (their
    per-item scores too, and the paired differences computed again from them)."""
    out = copy.deepcopy(doc)
    out["families"][a], out["families"][b] = out["families"][b], out["families"][a]
    return _with_paired(out)
