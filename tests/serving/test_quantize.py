"""The INT8 recipes: which weight range a CPU gets, and what each recipe keeps in FP32."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from vlarena.serving import quantize
from vlarena.serving.quantize import (
    WEIGHT_RANGE_CHOICES,
    cpu_has_vnni,
    describe_cpu,
    quantize_int8,
    recipe,
    weight_range,
)


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: fpu sse2 {flags}\n\n")
    return path


def test_vnni_is_read_from_the_cpu_flags(tmp_path):
    assert cpu_has_vnni(_cpuinfo(tmp_path, "avx2 avx512f avx512_vnni"))
    assert cpu_has_vnni(_cpuinfo(tmp_path, "avx2 avx_vnni"))
    assert not cpu_has_vnni(_cpuinfo(tmp_path, "avx2 fma avx512f"))
    assert not cpu_has_vnni(tmp_path / "missing")


def test_the_cpu_is_described_from_its_first_processor_block(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_vnni\n\n"
        "processor\t: 1\nmodel name\t: another\nflags\t\t: fpu\n"
    )
    described = describe_cpu(path)
    assert described["model"] == "AMD EPYC"
    assert (described["family"], described["modelNumber"]) == (25, 17)
    assert described["avx512"] is True and described["vnni"] is True
    bare = describe_cpu(tmp_path / "missing")
    assert "model" not in bare and "vnni" not in bare and bare["cores"] >= 1


def test_auto_reduces_the_weight_range_only_on_x86_without_vnni(monkeypatch):
    assert weight_range("full") == "full" and weight_range("reduced") == "reduced"
    assert weight_range("auto", machine="aarch64") == "full"
    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: False)
    assert weight_range("auto", machine="x86_64") == "reduced"
    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: True)
    assert weight_range("auto", machine="AMD64") == "full"
    with pytest.raises(ValueError, match="choose auto, full or reduced"):
        weight_range("int4")


def _fp32_convs(path: Path) -> list[str]:
    """Convolutions whose weights are not dequantized INT8."""
    graph = onnx.load(str(path)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input[1] not in dequantized]


def test_full_range_keeps_the_first_conv_in_fp32_reduced_the_last_too(tiny_exports, tmp_path):
    vision = tiny_exports["vl-jepa"].path_of("vision")
    size = tiny_exports["vl-jepa"].image_size
    calibration = {"images": np.random.default_rng(0).uniform(-1, 1, (8, 3, size, size))}
    calibration["images"] = calibration["images"].astype(np.float32)
    graph = onnx.load(str(vision)).graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    full = _fp32_convs(quantize_int8(vision, tmp_path / "full.onnx", calibration, "full"))
    reduced = _fp32_convs(quantize_int8(vision, tmp_path / "red.onnx", calibration, "reduced"))
    assert len(convs) > 2
    assert len(full) == 1 and len(reduced) == 2
    assert recipe("int8", "full") != recipe("int8", "reduced") != recipe("fp16")


def test_the_export_records_its_recipes_and_the_command_chooses_the_range(
    tiny_compare, tiny_exports, tmp_path, capsys
):
    from vlarena.experiments.cli import register
    from vlarena.serving.manifest import ServingManifest

    made = tiny_exports["vl-jepa"].parts["vision"].recipes
    assert made == {"fp16": recipe("fp16"), "int8": recipe("int8", weight_range())}
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    register(commands)
    export = commands.choices["export"]
    choices = next(a.choices for a in export._actions if a.dest == "int8_weights")
    assert tuple(choices) == WEIGHT_RANGE_CHOICES
    run_dir = tiny_exports["vl-jepa"].directory.parent
    options = ["--int8-weights", "reduced", "--calibration-images", "16", "--accuracy-images", "0"]
    args = parser.parse_args(["export", str(run_dir), "--out", str(tmp_path / "x"), *options])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["recipes"]["int8"] == recipe("int8", "reduced")
    manifest = ServingManifest.load(tmp_path / "x")
    assert manifest.parts["vision"].recipes["int8"] == recipe("int8", "reduced")
    assert len(_fp32_convs(manifest.path_of("vision", "int8"))) == 2
