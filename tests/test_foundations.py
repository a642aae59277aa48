"""The bottom floor: run-directory layout, atomic writes, and typed events with their wire shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlarena.errors import UserInputError
from vlarena.events import (
    ArtifactEvent,
    LogEvent,
    MetricEvent,
    ProgressEvent,
    RunTag,
    as_dict,
    describe,
    event_from_dict,
    tagged,
)
from vlarena.files import atomic_path, atomic_write_text, read_json, write_json
from vlarena.rundirs import AttemptsDir, JobDir, RunDir, RunNotFound


def test_a_run_is_found_from_its_directory_its_job_or_its_model(tmp_path: Path) -> None:
    job = JobDir(tmp_path)
    run = job.single_run
    run.path.mkdir()
    run.model.write_bytes(b"x")
    assert RunDir.resolve(tmp_path) == run == RunDir.resolve(run.path) == RunDir.resolve(run.model)
    assert RunDir.of_model(run.model).export == run.path / "export"
    with pytest.raises(RunNotFound, match=r"no model\.pt") as caught:
        RunDir.resolve(tmp_path / "elsewhere")
    assert isinstance(caught.value, UserInputError) and isinstance(caught.value, FileNotFoundError)


def test_a_compare_job_lists_its_runs_by_family_and_seed(tmp_path: Path) -> None:
    job = JobDir(tmp_path)
    for family, seed in (("vl-jepa", 1), ("token-vlm", 0), ("token-vlm", 1)):
        run = job.seed_run(family, seed)
        run.path.mkdir(parents=True)
        run.model.write_bytes(b"x")
    assert [job.relative(r.path) for r in job.seed_runs()] == [
        "token-vlm/seed0",
        "token-vlm/seed1",
        "vl-jepa/seed1",
    ]


def test_a_new_attempt_starts_from_a_copy_of_the_last_and_success_prunes_the_rest(
    tmp_path: Path,
) -> None:
    attempts = AttemptsDir.of_job(tmp_path, "job-1")
    first = attempts.start(1)
    (first / "checkpoint.pt").write_text("step 3")
    second = attempts.start(3)
    assert (second / "checkpoint.pt").read_text() == "step 3"
    assert attempts.start(3) == second  # an existing attempt is reused
    assert [k for k, _ in attempts.attempts()] == [1, 3]
    attempts.prune(keep=second)
    assert [k for k, _ in attempts.attempts()] == [3]


def test_atomic_writes_leave_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "result.json"
    write_json(target, {"value": np.float32(0.5), "path": tmp_path, "n": np.int64(3)})
    assert read_json(target) == {"value": 0.5, "path": str(tmp_path), "n": 3}
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("torn")
        raise RuntimeError("killed mid-write")
    assert read_json(target)["n"] == 3
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        write_json(target, {"x": object()})
    atomic_write_text(target, "{}")
    assert json.loads(target.read_text()) == {}


def test_events_keep_their_run_and_round_trip_through_their_wire_shape() -> None:
    seen: list = []
    sink = tagged(seen.append, RunTag("vl-jepa", 2))
    sink(LogEvent("hello", "warning"))
    sink(
        ProgressEvent("train", 64, 128, "samples", step=2, total_steps=4, loss=0.5, per_second=10.0)
    )
    sink(ProgressEvent("evaluate", 1, 4, "metric groups"))
    sink(MetricEvent(64, {"caption_of_10": 0.5}))
    sink(ArtifactEvent("checkpoint", "run/checkpoint.pt", 2, 64))
    wire = [as_dict(e) for e in seen]
    assert wire[0] == {
        "type": "log",
        "level": "warning",
        "message": "hello",
        "family": "vl-jepa",
        "seed": 2,
    }
    assert wire[1]["samplesSeen"] == 64 and wire[1]["totalSamples"] == 128
    assert wire[1]["percent"] == 50.0 and wire[2]["phase"] == "evaluate"
    assert [event_from_dict(w) for w in wire] == seen
    assert event_from_dict({"type": "cluster"}) is None
    assert describe(seen[0]) == "[vl-jepa seed 2] hello"
    assert "64/128 samples (50.0%), loss 0.500" in describe(seen[1])
    assert "caption_of_10" in describe(seen[3]) and "run/checkpoint.pt" in describe(seen[4])


def test_atomic_writes_give_files_the_mode_an_ordinary_write_would(tmp_path: Path) -> None:
    """Another uid (Triton reading an export) can read what a job wrote."""
    plain, atomic = tmp_path / "plain", tmp_path / "atomic"
    plain.write_text("x")
    atomic_write_text(atomic, "x")
    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_a_job_file_is_a_regular_file_inside_the_job_and_nothing_else(tmp_path: Path) -> None:
    job = JobDir(tmp_path / "job")
    (job.path / "run").mkdir(parents=True)
    write_json(job.metrics, {"ok": True})
    (tmp_path / "secret").write_text("no")
    (job.path / "out").symlink_to(tmp_path / "secret")
    assert job.file("metrics.json") == job.metrics.resolve()
    for name in ("run", "absent.json", "../secret", "out", "metrics.json\x00.html", "/etc/passwd"):
        assert job.file(name) is None, name
