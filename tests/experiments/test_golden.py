"""Golden values: a tiny train, compare and evaluate with fixed seeds give the numbers recorded
in `golden_metrics.json`, within 1e-6 (timings excluded), so a refactoring changes no number.

Float results depend on the CPU's instruction set and torch's build, so the file holds one entry
per CPU signature; on a CPU without an entry the test is skipped and says so.
`VLARENA_WRITE_GOLDEN=1` records this CPU's entry (do that only on code known to be right).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.conftest import TINY_DATA, TINY_EVAL, tiny_spec

GOLDEN = Path(__file__).with_name("golden_metrics.json")
TOLERANCE = 1e-6
# Keys whose values are wall-clock measurements, dates or machine paths; `provenance` hashes
# the dataset's fingerprint, which depends on where the data lies; `schema` is the document's
# version, which a new field raises.
UNSTABLE = {
    "provenance",
    "schema",
    "seconds",
    "samplesPerSecond",
    "trainSeconds",
    "evalSeconds",
    "latencyMsPerImage",
    "latency_ms_per_image",
    "ydecoder_seconds",
    "createdAt",
    "manifest",
    "model",
}


def cpu_signature() -> str:
    """The CPU model, its vector extensions that change float results, torch and threads."""
    model, flags = platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    vector = "+".join(
        sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_bf16", "amx_tile"})
    )
    return f"{model} [{vector}] torch {torch.__version__} threads {os.environ.get('VLARENA_NUM_THREADS')}"


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """Every number and string of a JSON document by its dotted path, unstable keys left out."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            if key not in UNSTABLE:
                out.update(leaves(inner, f"{prefix}{key}."))
        return out
    if isinstance(value, list):
        out = {}
        for i, inner in enumerate(value):
            out.update(leaves(inner, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): value}


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Every recorded value that is gone or changed; fields added since are not differences."""
    out = [f"{k}: missing" for k in expected.keys() - actual.keys()]
    for key in expected.keys() & actual.keys():
        a, b = expected[key], actual[key]
        if isinstance(a, float) or isinstance(b, float):
            if a is None or b is None or abs(float(a) - float(b)) > TOLERANCE:
                out.append(f"{key}: {a!r} → {b!r}")
        elif a != b:
            out.append(f"{key}: {a!r} → {b!r}")
    return sorted(out)


@pytest.fixture(scope="module")
def golden_runs(tiny_compare, tmp_path_factory) -> dict[str, Any]:
    """The three documents: the shared tiny compare's metrics.json, a tiny train job's
    metrics.json and an evaluate job's evaluation.json on the compare's token VLM."""
    from tests.experiments.jobs import run_job

    train_dir = tmp_path_factory.mktemp("golden-train")
    run_job(
        tiny_spec(
            "train",
            model={"family": "vl-jepa", "config": {"preset": "tiny"}},
            budget={"samples": 2048},
            export=False,
        ),
        train_dir,
    )
    token_run = tiny_compare["workdir"] / "token-vlm" / "seed0"
    eval_dir = tmp_path_factory.mktemp("golden-evaluate")
    run_job(
        {
            "type": "evaluate",
            "source": {"runDir": str(token_run)},
            "dataset": TINY_DATA,
            "evaluation": TINY_EVAL,
        },
        eval_dir,
    )
    return {
        "compare": tiny_compare["metrics"],
        "train": json.loads((train_dir / "metrics.json").read_text()),
        "evaluate": json.loads((eval_dir / "evaluation.json").read_text()),
    }


def test_tiny_jobs_reproduce_the_golden_metrics(golden_runs: dict[str, Any]) -> None:
    actual = {name: leaves(doc) for name, doc in golden_runs.items()}
    signature = cpu_signature()
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if os.environ.get("VLARENA_WRITE_GOLDEN") == "1":
        recorded[signature] = actual
        GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    if signature not in recorded:
        pytest.skip(f"no golden metrics for this CPU ({signature}); recorded: {sorted(recorded)}")
    # Keys recorded before they were known to be unstable are left out as well.
    expected = {
        doc: {k: v for k, v in values.items() if not UNSTABLE & set(k.split("."))}
        for doc, values in recorded[signature].items()
    }
    assert sorted(expected) == sorted(actual)
    found = [
        f"{doc}.{line}" for doc in expected for line in differences(expected[doc], actual[doc])
    ]
    assert not found, "changed numbers:\n" + "\n".join(found[:40])
    # The documents hold what a comparison reads: both families' metrics, a curve, a train run.
    assert any(k.startswith("families.vl-jepa.summary.") for k in actual["compare"])
    assert any(k.startswith("families.token-vlm.seeds.0.curve.") for k in actual["compare"])
    assert any(k.startswith("metrics.") for k in actual["evaluate"])
