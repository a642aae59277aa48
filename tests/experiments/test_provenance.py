"""Provenance: a run directory remembers what made it; a rerun under another spec is refused
(or retrained with force), the same spec reuses the finished run."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import TINY_DATA
from tests.experiments.jobs import run_job

from vlarena.experiments.configs import RunSpec
from vlarena.experiments.provenance import StaleRunError, components, digest
from vlarena.files import read_json
from vlarena.jobs.spec import DatasetSpec, Evaluation
from vlarena.rundirs import JobDir

EVAL = {"maxImages": 8, "generateImages": 2, "retrievalPools": [4], "latencyRepeats": 0}


def small_train(samples: int) -> dict:
    return {
        "type": "train",
        "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
        "dataset": TINY_DATA,
        "hyperparameters": {"batchSize": 32, "warmupSteps": 1},
        "budget": {"samples": samples},
        "evaluation": {**EVAL, "curvePoints": 0},
        "export": False,
    }


def test_a_changed_spec_is_refused_and_force_retrains(tmp_path: Path) -> None:
    job = JobDir(tmp_path)
    first = run_job(small_train(64), tmp_path)
    recorded = read_json(job.single_run.provenance)
    assert read_json(job.single_run.result)["provenance"] == recorded["hash"]
    finished = job.single_run.result.stat().st_mtime_ns
    assert run_job(small_train(64), tmp_path)["metrics"] == first["metrics"]
    assert job.single_run.result.stat().st_mtime_ns == finished  # reused, not retrained
    with pytest.raises(StaleRunError, match=r"train\.budget_samples 64 → 96") as caught:
        run_job(small_train(96), tmp_path)
    assert "--force" in str(caught.value)
    run_job(small_train(96), tmp_path, force=True)
    assert read_json(job.single_run.result)["samplesSeen"] == 96


def test_a_run_of_unknown_provenance_is_refused(tmp_path: Path) -> None:
    run_dir = JobDir(tmp_path).single_run
    run_dir.path.mkdir(parents=True)
    run_dir.checkpoint.write_bytes(b"from an earlier version")
    with pytest.raises(StaleRunError, match="no provenance recorded"):
        run_job(small_train(64), tmp_path)


def test_specs_that_mean_the_same_run_hash_alike() -> None:
    def run(config: dict, **train: int) -> RunSpec:
        return RunSpec(
            family="vl-jepa",
            model_config=config,
            dataset=DatasetSpec.model_validate(TINY_DATA),
            train={"budget_samples": 64, **train},
            evaluation=Evaluation(),
        )

    tiny = digest(components(run({"preset": "tiny"}), "data"))
    assert tiny == digest(components(run({"preset": "tiny", "d_model": 64}), "data"))
    assert tiny == digest(components(run({"preset": "tiny"}, batch_size=64), "data"))
    assert tiny != digest(components(run({"preset": "tiny"}), "other data"))
    assert tiny != digest(components(run({"preset": "tiny"}, seed=1), "data"))
