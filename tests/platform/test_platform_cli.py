"""The `jobs` and `models` commands against the running test gateway and workers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from platform_harness import KEYS, Gateway, WorkerPool, failing_job, tiny_train

from vlarena.client.cli import register
from vlarena.gateway.cli import register as register_gateway
from vlarena.settings import get_settings


def vlarena(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="vlarena")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register_gateway(subparsers)  # for `gateway new-key`
    register(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def as_user(gateway: Gateway, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", "200")

    def use(who: str) -> None:
        monkeypatch.setenv("VLARENA_API_URL", gateway.url)
        monkeypatch.setenv("VLARENA_API_KEY", KEYS[who][0])
        get_settings.cache_clear()

    yield use
    get_settings.cache_clear()


def test_submit_follow_list_get_logs_and_models(
    as_user: Any,
    workers: WorkerPool,
    trained_job: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workers.ensure(1)
    as_user("alice")
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_train()))
    assert vlarena("jobs", "submit", str(spec_file), "--validate-only") == 0
    assert "valid" in capsys.readouterr().out

    # Followed to its end: a job that fails at once exits 1 and says why.
    spec_file.write_text(yaml.safe_dump(failing_job(maxRetries=0)))
    assert vlarena("jobs", "submit", str(spec_file), "--follow") == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "manifest.jsonl" in out

    job_id = trained_job["job"]["id"]
    assert vlarena("jobs", "list", "-o", "json", "--state", "SUCCEEDED") == 0
    assert job_id in {j["id"] for j in json.loads(capsys.readouterr().out)["items"]}
    assert vlarena("jobs", "list", "--type", "train") == 0
    assert job_id in capsys.readouterr().out.replace("\n", "")

    assert vlarena("jobs", "get", job_id) == 0
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out and "platform-test-model" in out
    assert vlarena("jobs", "logs", job_id) == 0
    assert "job succeeded" in capsys.readouterr().out
    assert vlarena("jobs", "logs", "-f", job_id) == 0
    out = capsys.readouterr().out
    assert "job succeeded" in out and "samples" in out

    assert vlarena("models", "list") == 0
    assert "platform-test-model" in capsys.readouterr().out
    assert vlarena("models", "versions", "platform-test-model", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["items"][0]["sourceJob"] == job_id

    # The model is alice's (her job registered it): another submit key may not move its
    # aliases, an admin key may.
    as_user("bob")
    assert vlarena("models", "alias", "platform-test-model", "candidate", "1") == 2
    assert "belongs to key:alice" in capsys.readouterr().err
    as_user("root")
    assert vlarena("models", "alias", "platform-test-model", "candidate", "1") == 0
    assert "candidate → version 1" in capsys.readouterr().out
    assert vlarena("models", "alias", "platform-test-model", "candidate", "--remove") == 0


def test_cancel_and_errors(
    as_user: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    as_user("alice")
    gpu = tmp_path / "gpu.yaml"
    gpu.write_text(yaml.safe_dump(tiny_train(resources={"gpus": 1})))
    assert vlarena("jobs", "submit", str(gpu), "-o", "json") == 0
    job_id = json.loads(capsys.readouterr().out)["id"]
    assert vlarena("jobs", "cancel", job_id) == 0
    assert "CANCELLED" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_train(budget={"samples": -1})))
    assert vlarena("jobs", "submit", str(bad)) == 2
    assert "budget.samples" in capsys.readouterr().err

    assert vlarena("jobs", "get", "job-00000000000000") == 2
    assert "no job" in capsys.readouterr().err


def test_new_key_prints_a_key_and_its_hashed_entry(capsys: pytest.CaptureFixture[str]) -> None:
    from vlarena.gateway.auth import key_digest

    assert vlarena("gateway", "new-key", "--name", "ci", "--scopes", "submit") == 0
    lines = capsys.readouterr().out.splitlines()
    key = lines[0].rsplit(" ", 1)[1]
    entry = json.loads(lines[-1])
    assert entry == {"name": "ci", "sha256": key_digest(key), "scopes": ["submit"]}
    assert key not in lines[-1]
