"""The versioned `metrics.json` of a job: per family, per seed, final metrics with chance levels
and the learning curve; plus a summary over seeds."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from vlarena.data.manifest import Dataset

# v2 adds learnedParameters and frozenParameters per family and run, and each run's stages.
METRICS_SCHEMA = "vlarena.metrics/v2"


def _summary(seeds: list[dict[str, Any]]) -> dict[str, Any]:
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
    return out


def metrics_document(
    dataset: Dataset, budget: dict[str, Any], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """metrics.json of the runs (result records of `train_run`) on `dataset` under `budget`."""
    families: dict[str, Any] = {}
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
    for fam in families.values():
        fam["summary"] = _summary(fam["seeds"])
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
    }


def summary_values(doc: dict[str, Any]) -> dict[str, float]:
    """`family/metric` → mean over seeds, the job's headline numbers."""
    return {
        f"{fam}/{name}": s["mean"]
        for fam, body in doc["families"].items()
        for name, s in body["summary"].items()
    }
