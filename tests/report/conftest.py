"""Fixtures of the report tests: a three-seed comparison built from the tiny compare run."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _jitter(value: Any, rng: np.random.Generator, scale: float) -> Any:
    if isinstance(value, float):
        return value * (1 + rng.normal(0, scale))
    return value


@pytest.fixture(scope="session")
def three_seed_workdir(
    tiny_compare: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny compare run's directory as if it had trained three seeds: seed 0 is the real
    run (its models are linked), seeds 1 and 2 scatter its numbers by a few percent."""
    doc = copy.deepcopy(tiny_compare["metrics"])
    workdir = tmp_path_factory.mktemp("three-seeds")
    rng = np.random.default_rng(0)
    for family, body in doc["families"].items():
        os.symlink(tiny_compare["workdir"] / family, workdir / family)
        first = body["seeds"][0]
        for seed in (1, 2):
            run = copy.deepcopy(first)
            run["seed"] = first["seed"] + seed
            for m in run["metrics"].values():
                m["value"] = (
                    min(1.0, _jitter(m["value"], rng, 0.05))
                    if m["value"] <= 1
                    else _jitter(m["value"], rng, 0.05)
                )
            for point in run["curve"]:
                for key in point:
                    if key not in ("samplesSeen", "step"):
                        point[key] = _jitter(point[key], rng, 0.05)
            run["samplesPerSecond"] = _jitter(run["samplesPerSecond"], rng, 0.1)
            body["seeds"].append(run)
        for name, stat in body["summary"].items():
            values = [s["metrics"][name]["value"] for s in body["seeds"]]
            stat.update(mean=float(np.mean(values)), std=float(np.std(values, ddof=1)), seeds=3)
    (workdir / "metrics.json").write_text(json.dumps(doc))
    return workdir
