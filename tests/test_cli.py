"""The `vlarena` command end to end on a user's manifest: export, train, evaluate, DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlarena.cli import main

TINY = [
    "--preset",
    "tiny",
    "--batch-size",
    "16",
    "--warmup-steps",
    "2",
    "--quiet",
    "--eval",
    "maxImages=16",
    "--eval",
    "generateImages=4",
    "--eval",
    "retrievalPools=[8]",
    "--eval",
    "latencyRepeats=1",
    "--eval",
    "curvePoints=0",
]


def vlarena(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("vlarena")
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    done = vlarena(
        "data",
        "export",
        "fashion-grid",
        str(out),
        "--option",
        "n_train=96",
        "--option",
        "n_val=16",
        "--option",
        "n_test=32",
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


@pytest.fixture(scope="module")
def trained(exported, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train")
    done = vlarena(
        "train",
        "--model",
        "token-vlm",
        "--dataset",
        str(exported),
        "--budget-steps",
        "5",
        *TINY,
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "caption_of_10" in done.stdout  # the results table
    return out


def test_train_on_an_exported_manifest_writes_metrics_and_model(trained):
    doc = json.loads((trained / "metrics.json").read_text())
    assert doc["schema"] == "vlarena.metrics/v4"
    seed = doc["families"]["token-vlm"]["seeds"][0]
    assert seed["steps"] == 5 and seed["samplesSeen"] == 80
    assert (trained / "run" / "model.pt").exists()
    assert not (trained / "run" / "checkpoint.pt").exists()  # cleared once the run finished


def test_evaluate_a_run_on_its_own_dataset(trained):
    done = vlarena(
        "evaluate",
        str(trained),
        "--eval",
        "maxImages=16",
        "--eval",
        "generateImages=2",
        "--eval",
        "retrievalPools=[4]",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((trained / "evaluation.json").read_text())
    assert result["metrics"]["caption_of_10"]["chance"] == pytest.approx(0.1)
    assert result["metrics"]["i2t_r1@4"]["chance"] == pytest.approx(0.25)
    assert result["images"] == 16


def same_parameters(a: Path, b: Path) -> None:
    one = torch.load(a / "run" / "model.pt", weights_only=False)["state_dict"]
    two = torch.load(b / "run" / "model.pt", weights_only=False)["state_dict"]
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5), k


def test_two_process_run_equals_one_process_run_and_its_checkpoint_resumes_on_one(
    exported, trained, tmp_path
):
    """`--nodes 2`: torchrun, two gloo processes, the same global batch as one process."""
    out = tmp_path / "ddp"
    args = ["train", "--model", "token-vlm", "--dataset", str(exported), "--budget-steps", "5"]
    args += [*TINY, "--out", str(out)]
    stopped = vlarena(*args, "--nodes", "2", "--stop-after-steps", "3")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "stopped at step 3" in stopped.stderr
    checkpoint = torch.load(out / "run" / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 3 and not (out / "run" / "model.pt").exists()
    alone = tmp_path / "resumed-alone"
    shutil.copytree(out, alone)

    two = vlarena(*args, "--nodes", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "caption_of_10" in two.stdout  # rank 0 alone prints the results
    assert two.stderr.count("resumed from checkpoint at step 3") == 1
    same_parameters(trained, out)

    one = vlarena(*args[:-1], str(alone))
    assert one.returncode == 0, one.stderr[-3000:]
    assert "resumed from checkpoint at step 3" in one.stderr
    same_parameters(trained, alone)


def test_bad_input_is_a_clear_error_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "manifest.jsonl"
    bad.write_text('{"image": "missing.png", "captions": ["a bag"]}\n')
    assert (
        main(
            [
                "train",
                "--model",
                "token-vlm",
                "--dataset",
                str(bad),
                "--budget-steps",
                "1",
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "missing.png" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--model",
                "nope",
                "--dataset",
                "fashion-grid",
                "--budget-steps",
                "1",
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 2
    )
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--model",
                "token-vlm",
                "--dataset",
                "fashion-grid",
                "--budget-steps",
                "1",
                "--out",
                str(tmp_path),
                "--config",
                "novalue",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--config takes KEY=VALUE" in err


def test_metrics_table_prints_both_families(tiny_compare, capsys):
    from vlarena.evaluation.tables import print_metrics_table

    print_metrics_table(tiny_compare["metrics"])
    out = capsys.readouterr().out
    assert "token-vlm" in out and "vl-jepa" in out and "learned params" in out


def test_gpu_check_says_when_there_is_no_gpu(tmp_path, capsys, monkeypatch):
    import torch

    from vlarena.experiments import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.gpu_check(tmp_path) == 2
    assert "no CUDA device" in capsys.readouterr().out
    # The parity probe itself runs on any device: on the CPU it compares the CPU with itself.
    assert gpu_check.attention_parity(torch.device("cpu")) == 0.0


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    """The exported data's test split alone, every record marked `split: test`."""
    out = tmp_path_factory.mktemp("held-out")
    options = ["n_train=96", "n_val=16", "n_test=32", "split=test"]
    done = vlarena("data", "export", "fashion-grid", str(out), *[f"--option={o}" for o in options])
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def test_evaluate_on_someone_elses_all_test_manifest(trained, held_out, tmp_path):
    rows = [json.loads(line) for line in held_out.read_text().splitlines()]
    assert len(rows) == 32 and {r["split"] for r in rows} == {"test"}
    out = tmp_path / "held-out.json"
    done = vlarena(
        "evaluate", str(trained), "--dataset", str(held_out), "--eval", "maxImages=16",
        "--eval", "generateImages=4", "--eval", "retrievalPools=[4]", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["images"] == 16
    # CIDEr's chance level draws from the captions stored with the run at training time.
    assert (trained / "run" / "train-captions.json").exists()
    assert result["metrics"]["cider"]["chance"] >= 0


def test_evaluate_job_on_an_all_test_manifest(trained, held_out, tmp_path):
    from tests.experiments.jobs import run_job

    result = run_job(
        {
            "type": "evaluate",
            "source": {"runDir": str(trained / "run")},
            "dataset": {"uri": str(held_out)},
            "evaluation": {"maxImages": 8, "generateImages": 2, "retrievalPools": [4]},
        },
        tmp_path,
    )
    assert result["artifacts"] == ["evaluation.json"]
    assert json.loads((tmp_path / "evaluation.json").read_text())["images"] == 8


def test_evaluating_on_the_training_manifest_as_all_test_is_refused(trained, exported):
    done = vlarena("evaluate", str(trained), "--dataset", str(exported), "--all-test")
    assert done.returncode == 2
    assert "trained on this very manifest" in done.stderr and "Traceback" not in done.stderr
    done = vlarena("evaluate", str(trained / "nowhere"))
    assert done.returncode == 2 and "no model.pt" in done.stderr
