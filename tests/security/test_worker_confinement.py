"""The worker's runners read a submitted job's dataset and run under the confinement it is
given, whatever the gateway let through: a plain file is no run directory, /dev/zero is no
manifest, and a model file may not lead out of the roots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vlarena.errors import UserInputError
from vlarena.jobs.confinement import Confinement, ConfinementError
from vlarena.worker.execution import JOB_RUNNERS

TRAIN = {
    "type": "train",
    "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
    "budget": {"samples": 64},
}


def run(spec: dict[str, Any], workdir: Path, policy: Confinement) -> dict[str, Any]:
    return JOB_RUNNERS[spec["type"]](
        spec, workdir, on_event=lambda event: None, should_stop=lambda: False, confinement=policy
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


def test_an_unbounded_or_foreign_dataset_is_refused_before_it_is_read(
    root: Path, tmp_path: Path
) -> None:
    policy = Confinement(roots=(root,))
    (root / "zero").symlink_to("/dev/zero")
    for uri, problem in (
        ("/dev/zero", "/dev/zero is outside"),
        ("/etc/passwd", "/etc/passwd is outside"),
        (str(root / "zero"), "zero is outside"),
        (str(root / "absent.jsonl"), "absent.jsonl does not exist"),
    ):
        # refused by the policy, so never opened (reading /dev/zero would not return)
        with pytest.raises(ConfinementError) as caught:
            run(TRAIN | {"dataset": {"uri": uri}}, tmp_path / "job", policy)
        assert caught.value.field == "dataset.uri" and problem in caught.value.problem


def test_an_evaluate_job_reads_only_a_run_directory_under_the_roots(
    root: Path, tmp_path: Path
) -> None:
    policy = Confinement(roots=(root,))
    (root / "model.pt").write_bytes(b"a plain file")
    run_dir = root / "run"
    run_dir.mkdir()
    (run_dir / "model.pt").symlink_to(tmp_path / "elsewhere.pt")
    (tmp_path / "elsewhere.pt").write_bytes(b"outside the roots")
    evaluate = {"type": "evaluate", "dataset": {"name": "emoji"}}
    for run_dir_value, problem in (
        (root / "model.pt", "is not a directory"),
        (tmp_path, "is outside"),
        (run_dir, "run/model.pt is outside"),
    ):
        with pytest.raises(ConfinementError) as caught:
            run(evaluate | {"source": {"runDir": str(run_dir_value)}}, tmp_path / "job", policy)
        assert caught.value.field == "source.runDir" and problem in caught.value.problem
    # A user error: the worker ends the job FAILED with the message and does not retry it.
    assert issubclass(ConfinementError, UserInputError)


def test_run_job_confined_reads_what_a_pod_of_a_submitted_job_may(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vlarena.cli import main
    from vlarena.settings import get_settings

    root = tmp_path / "artifacts"
    root.mkdir()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TRAIN | {"dataset": {"uri": "/etc/passwd"}}))
    monkeypatch.setenv("VLARENA_ARTIFACT_DIR", str(root))
    get_settings.cache_clear()
    try:
        code = main(["run-job", str(spec), "--out", str(root / "job"), "--confined", "--quiet"])
    finally:
        get_settings.cache_clear()
    assert code == 2
    assert "/etc/passwd is outside" in capsys.readouterr().err
