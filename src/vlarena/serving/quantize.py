"""Reduced-precision variants of a graph: FP16, and static INT8 in QDQ form calibrated on images.

Static, not dynamic: dynamic INT8 quantises activations at run time and measured ~18× slower
than FP32 on a 2-core CPU, where static QDQ (scales fixed by calibration on training images)
lets onnxruntime fuse QuantizeLinear/DequantizeLinear pairs into integer kernels.
FP16 is the GPU variant: onnxruntime's CPU provider runs most FP16 ops by casting, so on a CPU
it is measured for accuracy, not speed.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from vlarena.files import atomic_path

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
CALIBRATION_BATCH = 16
WeightRange = Literal["full", "reduced"]
# Names of the recipes below; part of cached variants' keys, so a changed recipe makes new ones.
FP16_RECIPE = "fp16-keepio"
INT8_RECIPES: dict[str, str] = {
    "full": "int8-qdq-u8s8-perchannel-minmax-fp32first",
    "reduced": "int8-qdq-u8s8-perchannel-reduced-minmax-fp32ends",
}
WEIGHT_RANGE_CHOICES = ("auto", *INT8_RECIPES)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


def describe_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """This CPU as the serving benchmarks' figures depend on it: model name, x86 family and
    model numbers, cores, and whether it has AVX-512 and VNNI; read from `cpuinfo`, with what
    cannot be read left out."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags", "").split()
    described: dict[str, object] = {"cores": os.cpu_count(), "machine": platform.machine()}
    if "model name" in fields:
        described["model"] = fields["model name"]
    for key, name in (("cpu family", "family"), ("model", "modelNumber")):
        if fields.get(key, "").isdigit():
            described[name] = int(fields[key])
    if flags:
        described["avx512"] = "avx512f" in flags
        described["vnni"] = any(flag in flags for flag in VNNI_FLAGS)
    return described


def cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this x86 CPU multiplies u8×s8 pairs without saturating (AVX-512 VNNI or
    AVX-VNNI), read from `cpuinfo`; False where its flags cannot be read."""
    return bool(describe_cpu(cpuinfo).get("vnni", False))


def weight_range(setting: str = "auto", machine: str | None = None) -> WeightRange:
    """The INT8 weight range to quantise with: `setting` when it names one; for "auto",
    reduced (7-bit) on x86 CPUs without VNNI, whose u8×s8 kernels saturate 16-bit sums with
    full-range weights, and full (8-bit) everywhere else (VNNI, ARM, and GPUs)."""
    if setting in INT8_RECIPES:
        return setting  # type: ignore[return-value]
    if setting != "auto":
        raise ValueError(f"unknown INT8 weight range {setting!r}; choose auto, full or reduced")
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i386", "i686") and not cpu_has_vnni():
        return "reduced"
    return "full"


def qdq_op_counts(path: Path) -> dict[str, int]:
    """How many QuantizeLinear and DequantizeLinear nodes the graph at `path` holds."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return {op: sum(1 for node in graph.node if node.op_type == op) for op in QDQ_OPS}


def convert_fp16(source: Path, target: Path) -> Path:
    """FP16 weights and activations, FP32 inputs and outputs (casts at the edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    _save(model, target)
    return target


def quantize_int8(
    source: Path,
    target: Path,
    calibration: dict[str, np.ndarray],
    weights: WeightRange = "full",
) -> Path:
    """Static INT8 in QDQ form: per-channel signed weights, unsigned activations, scales from
    MinMax calibration over `calibration` (input name → a stack of examples). The first
    convolution, which reads the pixels, stays in FP32.

    `weights="reduced"` uses 7 of the weights' 8 bits (`reduce_range`), for x86 CPUs without
    VNNI: they multiply u8×s8 pairs into saturating 16-bit sums, which full-range weights
    overflow (measured on such a CPU: feature error 0.79 relative with full range, 0.47 without
    saturation, 0.39 with the last convolution also in FP32, which this recipe does). On a CPU
    with VNNI full-range weights measured 0.21 and lost 0.3 points of zero-shot top-1 where
    reduced ones lost 1.7 (fashion-grid, 2,000 test images).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            n = len(next(iter(calibration.values())))
            self.batches: Iterator[dict[str, np.ndarray]] = (
                {k: v[s : s + CALIBRATION_BATCH] for k, v in calibration.items()}
                for s in range(0, n, CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(quantized),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=weights == "reduced",
            nodes_to_exclude=_kept_in_fp32(convs, weights),
        )
        os.replace(quantized, target)
    return target


def _kept_in_fp32(convs: list[str], weights: WeightRange) -> list[str]:
    if len(convs) <= 2:
        return []
    return [convs[0], convs[-1]] if weights == "reduced" else [convs[0]]


def recipe(precision: str, weights: WeightRange = "full") -> str:
    """The name of the recipe that makes the `precision` variant."""
    return INT8_RECIPES[weights] if precision == "int8" else FP16_RECIPE


def make_variant(
    source: Path,
    target: Path,
    precision: str,
    calibration: dict[str, np.ndarray] | None,
    weights: WeightRange = "full",
) -> Path:
    """The `precision` ("fp16" or "int8") variant of the graph at `source`, at `target`."""
    if precision == "int8":
        if calibration is None:
            raise ValueError("an INT8 variant needs calibration data")
        return quantize_int8(source, target, calibration, weights)
    if precision == "fp16":
        return convert_fp16(source, target)
    raise ValueError(f"unknown precision {precision!r}; choose fp16 or int8")


def cached_variant(
    cache: Path,
    source: Path,
    precision: str,
    calibration: dict[str, np.ndarray] | None,
    weights: WeightRange = "full",
) -> Path:
    """A variant of a graph that many exports share (the frozen X-encoder's), made once and
    kept under `cache`, keyed by the graph, the recipe and, for INT8, the calibration data."""
    graph = hashlib.sha256(source.read_bytes() + recipe(precision, weights).encode())
    digest = graph.hexdigest()[:16]
    if calibration is not None:
        h = hashlib.sha256()
        for name in sorted(calibration):
            h.update(name.encode())
            h.update(np.ascontiguousarray(calibration[name]).tobytes())
        digest += "-" + h.hexdigest()[:16]
    path = cache / f"{source.stem}.{precision}.{digest}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            made = make_variant(source, Path(tmp) / path.name, precision, calibration, weights)
            os.replace(made, path)
    return path


def _save(model: onnx.ModelProto, target: Path) -> None:
    with atomic_path(target, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))
