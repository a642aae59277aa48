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
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Names the recipes below; part of cached variants' keys, so a changed recipe makes new ones.
RECIPE = "fp16-keepio/int8-qdq-u8s8-perchannel-reduced-minmax-fp32ends"
CALIBRATION_BATCH = 16


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


def quantize_int8(source: Path, target: Path, calibration: dict[str, np.ndarray]) -> Path:
    """Static INT8 in QDQ form: per-channel signed weights, unsigned activations, scales from
    MinMax calibration over `calibration` (input name → a stack of examples).

    Weights use 7 of their 8 bits (`reduce_range`): x86 CPUs without VNNI multiply u8×s8 pairs
    into saturating 16-bit sums, which full-range weights overflow (measured here: feature
    error 0.79 relative with full range, 0.47 without saturation). The first and last
    convolutions, the most sensitive, stay in FP32 (0.39).
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
            reduce_range=True,
            nodes_to_exclude=[convs[0], convs[-1]] if len(convs) > 2 else [],
        )
        os.replace(quantized, target)
    return target


def make_variant(
    source: Path, target: Path, precision: str, calibration: dict[str, np.ndarray] | None
) -> Path:
    """The `precision` ("fp16" or "int8") variant of the graph at `source`, at `target`."""
    if precision == "int8":
        if calibration is None:
            raise ValueError("an INT8 variant needs calibration data")
        return quantize_int8(source, target, calibration)
    if precision == "fp16":
        return convert_fp16(source, target)
    raise ValueError(f"unknown precision {precision!r}; choose fp16 or int8")


def cached_variant(
    cache: Path, source: Path, precision: str, calibration: dict[str, np.ndarray] | None
) -> Path:
    """A variant of a graph that many exports share (the frozen X-encoder's), made once and
    kept under `cache`, keyed by the graph and, for INT8, the calibration data."""
    digest = hashlib.sha256(source.read_bytes() + RECIPE.encode()).hexdigest()[:16]
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
            made = make_variant(source, Path(tmp) / path.name, precision, calibration)
            os.replace(made, path)
    return path


def _save(model: onnx.ModelProto, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.partial")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        shutil.move(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
