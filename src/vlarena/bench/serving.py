"""`make bench-serving`: the vision encoder (EfficientNet-Lite0 at 128 px, the bulk of every
request's compute) served four ways, side by side in one run, at 1, 8 and 32 concurrent clients
each sending one image per request:

- (a) PyTorch eager in-process, one forward per request;
- (b) Triton (the local `tritonserver`, python backend + onnxruntime), no dynamic batching;
- (c) the same with dynamic batching;
- (d) the INT8 QDQ graph on Triton with dynamic batching;

beside them the FP32 and INT8 graphs alone, run by onnxruntime in-process at batch 1, 8 and 32
(what batching and INT8 can give on this CPU without a server). The Triton configurations run in
interleaved rounds, so that a noisy neighbour slows all three alike. Then the test-split accuracy
of the FP16 and INT8 vision encoders against FP32 (from the export's `serving.json`, exported
again when its INT8 recipe is not the one asked for). Targets, on this CPU: (c) at least 1.25×
(b)'s throughput at 32 clients with a p99 no worse; (d) at least 1.5× (c)'s throughput with a
top-1 drop of at most 1 point, its graph holding QuantizeLinear/DequantizeLinear ops.

Run with `python -m vlarena.bench.serving [--run-dir RUN] [--duration S] [--rounds N]
[--int8-weights auto|full|reduced] [--out DIR]`; without a run directory it trains (once,
cached) a small VL-JEPA on fashion-grid to measure accuracy with. It writes
`<out>/serving.json` and exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlarena.events import ignore
from vlarena.jobs.spec import parse_job_spec
from vlarena.rundirs import JobDir, RunDir
from vlarena.serving.client import TritonPool
from vlarena.serving.manifest import MANIFEST_FILE, ServingManifest
from vlarena.serving.quantize import (
    WEIGHT_RANGE_CHOICES,
    WeightRange,
    describe_cpu,
    qdq_op_counts,
    recipe,
    weight_range,
)
from vlarena.serving.repository import Batching, ModelRepository
from vlarena.serving.sync import DesiredModel, write_plan
from vlarena.serving.triton import LocalTriton

CONCURRENCY = (1, 8, 32)
BATCHING_SPEEDUP_TARGET = 1.25
INT8_SPEEDUP_TARGET = 1.5
INT8_MAX_DROP_POINTS = 1.0
BENCH_DATA = {"name": "fashion-grid", "options": {"n_train": 2000, "n_val": 100, "n_test": 500}}
# Test images the accuracy deltas are measured on (at most the split's size): a one-point drop
# is ~10 of 1,000, so fewer leave the target within the noise.
ACCURACY_IMAGES = 2000


@dataclass
class Cell:
    config: str
    concurrency: int
    requests: int
    seconds: float
    images_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def _cell(
    config: str, concurrency: int, latencies: list[float], seconds: float, errors: int
) -> Cell:
    return Cell(
        config,
        concurrency,
        len(latencies),
        round(seconds, 2),
        round(len(latencies) / seconds, 1),
        round(_percentile(latencies, 50), 1),
        round(_percentile(latencies, 99), 1),
        errors,
    )


# --- (a) PyTorch eager ---------------------------------------------------------------------------
def bench_torch(encoder: Any, images: np.ndarray, concurrency: int, duration: float) -> Cell:
    import torch

    batch = [torch.from_numpy(images[i : i + 1]) for i in range(len(images))]
    encoder(batch[0])  # warm-up
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def client(k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            encoder(batch[i % len(batch)])
            with lock:
                latencies.append(time.perf_counter() - started)
            i += concurrency

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    return _cell(
        "(a) PyTorch eager, in-process", concurrency, latencies, time.perf_counter() - started, 0
    )


# --- the graphs alone, in-process --------------------------------------------------------------
ONNX_BATCHES = (1, 8, 32)


def bench_onnx(
    manifest: ServingManifest, images: np.ndarray, threads: int, duration: float, rounds: int
) -> dict[str, dict[int, float]]:
    """Images per second of the FP32 and INT8 graphs run by onnxruntime in this process (no
    server) at each of ONNX_BATCHES: the ceiling of (b)-(d), and whether batching pays on
    this CPU at all. Precisions and batch sizes alternate within each of `rounds` rounds."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {
        precision: ort.InferenceSession(
            str(manifest.path_of("vision", precision)), options, providers=["CPUExecutionProvider"]
        )
        for precision in ("fp32", "int8")
    }
    batches = {b: np.resize(images, (b, *images.shape[1:])) for b in ONNX_BATCHES}
    done = {p: dict.fromkeys(ONNX_BATCHES, 0) for p in sessions}
    spent = {p: dict.fromkeys(ONNX_BATCHES, 0.0) for p in sessions}
    slot = duration / rounds / len(sessions) / len(ONNX_BATCHES)
    for session in sessions.values():
        session.run(None, {"images": batches[max(ONNX_BATCHES)]})  # warm-up
    for _ in range(rounds):
        for b, batch in batches.items():
            for precision, session in sessions.items():
                started = time.perf_counter()
                while (elapsed := time.perf_counter() - started) < slot or not done[precision][b]:
                    session.run(None, {"images": batch})
                    done[precision][b] += b
                spent[precision][b] += elapsed
    return {p: {b: round(done[p][b] / spent[p][b], 1) for b in ONNX_BATCHES} for p in sessions}


# --- (b), (c), (d) Triton ------------------------------------------------------------------------
@dataclass
class Tally:
    """Latencies, wall time and errors of one configuration, over its rounds."""

    latencies: list[float]
    seconds: float = 0.0
    errors: int = 0


async def bench_triton(
    pool: TritonPool,
    model: str,
    images: np.ndarray,
    concurrency: int,
    duration: float,
    tally: Tally,
) -> None:
    """One round of `duration` seconds of `concurrency` clients, added to `tally`."""
    latencies = tally.latencies

    async def one(i: int) -> None:
        await pool.infer(model, 1, {"images": images[i % len(images)][None]}, ["tokens"])

    await asyncio.gather(*(one(i) for i in range(min(concurrency, 8))))  # warm-up
    deadline = time.perf_counter() + duration

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await one(i)
            except Exception:
                tally.errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    tally.seconds += time.perf_counter() - started


TRITON_CONFIGS = (
    ("bench.vision.nobatch", "(b) Triton, no dynamic batching"),
    ("bench.vision", "(c) Triton, dynamic batching"),
    ("bench.vision.int8", "(d) Triton INT8, dynamic batching"),
)


def bench_repository(root: Path, manifest: ServingManifest, threads: int) -> list[str]:
    """The three Triton models of (b)-(d): the same FP32 graph without and with dynamic
    batching, and the INT8 graph with it; one instance each."""
    part = manifest.parts["vision"]
    dynamic = part.batching
    static = Batching(dynamic.max_batch_size, None, 0)
    desired = {
        "bench.vision.nobatch": DesiredModel(
            part.inputs, part.outputs, static, {1: manifest.path_of("vision")}
        ),
        "bench.vision": DesiredModel(
            part.inputs, part.outputs, dynamic, {1: manifest.path_of("vision")}
        ),
        "bench.vision.int8": DesiredModel(
            part.inputs, part.outputs, dynamic, {1: manifest.path_of("vision", "int8")}
        ),
    }
    write_plan(ModelRepository(root, intra_op_threads=threads), desired)
    return sorted(desired)


async def run_triton(
    server: LocalTriton, images: np.ndarray, levels: tuple[int, ...], duration: float, rounds: int
) -> list[Cell]:
    """At each level of concurrency, `rounds` rounds of (b), (c), (d) in turn, each round
    `duration / rounds` seconds long."""
    pool = TritonPool(server.grpc_url, size=4, timeout_s=60)
    cells = []
    try:
        for concurrency in levels:
            tallies = {model: Tally([]) for model, _ in TRITON_CONFIGS}
            for _ in range(rounds):
                for model, _ in TRITON_CONFIGS:
                    await bench_triton(
                        pool, model, images, concurrency, duration / rounds, tallies[model]
                    )
            for model, label in TRITON_CONFIGS:
                t = tallies[model]
                cells.append(_cell(label, concurrency, t.latencies, t.seconds, t.errors))
    finally:
        await pool.close()
    return cells


# --- the model whose export is measured ---------------------------------------------------------
def prepare_export(
    run_dir: Path | None, work: Path, weights: WeightRange | None = None
) -> tuple[ServingManifest, Path]:
    """The export of `run_dir` (made if missing or if its INT8 variant was made by another
    recipe than `weights` names; default: this CPU's), or of a small VL-JEPA trained once under
    `work`; and the run directory."""
    from vlarena.experiments.exports import export_run

    weights = weights or weight_range()
    if run_dir is None:
        from vlarena.experiments.jobs import run_job

        job = JobDir(work / "train")
        if not job.single_run.model.exists():
            spec = {
                "type": "train",
                "model": {"family": "vl-jepa", "config": {"preset": "tiny"}},
                "dataset": BENCH_DATA,
                "hyperparameters": {"batchSize": 64, "warmupSteps": 20, "learningRate": 2e-3},
                "budget": {"samples": 20000},
                "evaluation": {"maxImages": 100, "generateImages": 16, "curvePoints": 0},
            }
            print("training a tiny VL-JEPA to measure accuracy deltas with ...", file=sys.stderr)
            run_job(parse_job_spec(spec), job.path, on_event=ignore)
        run_dir = job.single_run.path
    run = RunDir.resolve(run_dir)
    if (run.export / MANIFEST_FILE).exists():
        manifest = ServingManifest.load(run.export)
        made = manifest.parts["vision"].recipes.get("int8")
        acc = manifest.accuracy
        wanted = min(ACCURACY_IMAGES, acc.get("splitImages", ACCURACY_IMAGES))
        if made == recipe("int8", weights) and acc.get("images", 0) >= wanted:
            return manifest, run.path
        print(
            f"re-exporting {run.path}: INT8 recipe {made}, accuracy on {acc.get('images')} "
            f"images; wanted {recipe('int8', weights)} on {wanted}",
            file=sys.stderr,
        )
    return export_run(run, accuracy_images=ACCURACY_IMAGES, int8_weights=weights), run.path


def report(cells: list[Cell], manifest: ServingManifest, qdq: dict[str, int]) -> dict[str, Any]:
    def at(label: str, concurrency: int) -> Cell:
        return next(c for c in cells if c.config.startswith(label) and c.concurrency == concurrency)

    top = max(c.concurrency for c in cells)
    b, c, d = at("(b)", top), at("(c)", top), at("(d)", top)
    precisions = manifest.accuracy.get("precisions", {})
    drops = precisions.get("int8", {}).get("deltaPoints", {})
    worst_drop = -min(drops.values(), default=float("nan"))
    batching = c.images_per_second / b.images_per_second
    int8 = d.images_per_second / c.images_per_second
    return {
        "concurrency": top,
        "batchingSpeedup": round(batching, 2),
        "batchingP99Ms": {"b": b.p99_ms, "c": c.p99_ms},
        "batchingMet": batching >= BATCHING_SPEEDUP_TARGET and c.p99_ms <= b.p99_ms,
        "int8Speedup": round(int8, 2),
        "int8WorstTop1DropPoints": worst_drop,
        "int8QdqOps": qdq,
        "int8Met": bool(
            int8 >= INT8_SPEEDUP_TARGET
            and worst_drop <= INT8_MAX_DROP_POINTS
            and min(qdq.values()) > 0
        ),
    }


def print_tables(
    cells: list[Cell],
    manifest: ServingManifest,
    summary: dict[str, Any],
    onnx: dict[str, dict[int, float]],
    cpu: dict[str, Any],
) -> None:
    model = cpu.get("model", cpu["machine"])
    if "family" in cpu:
        model += f" (family {cpu['family']}, model {cpu.get('modelNumber', '?')})"
    extensions = [name for name in ("avx512", "vnni") if cpu.get(name)]
    print(
        f"\nCPU: {model}, {cpu['cores']} cores, {' + '.join(extensions) or 'no AVX-512 or VNNI'}; "
        f"INT8 recipe {manifest.parts['vision'].recipes.get('int8')}"
    )
    print("\nthe graphs alone: onnxruntime in-process, images/s by batch size")
    print(f"{'batch':>7} {'FP32':>9} {'INT8':>9} {'INT8/FP32':>10}")
    for b in ONNX_BATCHES:
        fp32, int8 = onnx["fp32"][b], onnx["int8"][b]
        print(f"{b:>7} {fp32:>9.1f} {int8:>9.1f} {int8 / fp32:>9.2f}×")
    print(
        f"\n{'config':<36} {'clients':>7} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    )
    for c in sorted(cells, key=lambda c: (c.concurrency, c.config)):
        print(
            f"{c.config:<36} {c.concurrency:>7} {c.images_per_second:>9.1f} "
            f"{c.p50_ms:>8.1f} {c.p99_ms:>8.1f} {c.errors:>6}"
        )
    acc = manifest.accuracy
    print(f"\naccuracy on {acc.get('images', 0)} test images (vision encoder precision; rest FP32)")
    for precision, entry in acc.get("precisions", {}).items():
        values = ", ".join(
            f"{k} {100 * v:.1f}% ({entry['deltaPoints'][k]:+.1f} pt)"
            for k, v in entry["metrics"].items()
        )
        print(f"  {precision:<5} {values}")
    n = summary["concurrency"]
    print(
        f"\n(c)/(b) throughput at {n} clients: {summary['batchingSpeedup']:.2f}× "
        f"(target ≥ {BATCHING_SPEEDUP_TARGET}×), p99 {summary['batchingP99Ms']['c']:.0f} vs "
        f"{summary['batchingP99Ms']['b']:.0f} ms: {'met' if summary['batchingMet'] else 'MISSED'}"
    )
    print(
        f"(d)/(c) throughput at {n} clients: {summary['int8Speedup']:.2f}× "
        f"(target ≥ {INT8_SPEEDUP_TARGET}×), worst INT8 top-1 drop "
        f"{summary['int8WorstTop1DropPoints']:.1f} points (target ≤ {INT8_MAX_DROP_POINTS}), "
        f"QDQ ops {summary['int8QdqOps']}: {'met' if summary['int8Met'] else 'MISSED'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlarena.bench.serving", description=__doc__)
    parser.add_argument(
        "--run-dir", type=Path, help="a trained run to measure (default: train one)"
    )
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds the duration is split into"
    )
    parser.add_argument(
        "--int8-weights",
        choices=WEIGHT_RANGE_CHOICES,
        default="auto",
        help="INT8 weight range (auto: reduced on x86 CPUs without VNNI)",
    )
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--work", type=Path, help="cache of the trained model (default .cache)")
    args = parser.parse_args(argv)
    levels = tuple(int(c) for c in args.concurrency.split(","))

    import torch

    from vlarena.data.images import load_images
    from vlarena.experiments.inputs import Splits, open_dataset
    from vlarena.experiments.runs import trained_dataset
    from vlarena.models.x_encoders import XEncoderConfig, build_x_encoder

    torch.set_num_threads(args.threads)
    weights = weight_range(args.int8_weights)
    work = args.work or Path(".cache") / "bench-serving"
    manifest, run_dir = prepare_export(args.run_dir, work, weights)
    test = Splits.for_training(open_dataset(trained_dataset(RunDir(run_dir)))).test
    images = load_images([r.image for r in test.records[:64]], manifest.image_size)
    encoder = build_x_encoder(XEncoderConfig(image_size=manifest.image_size)).eval()
    cells = [bench_torch(encoder, images, n, args.duration) for n in levels]
    onnx = bench_onnx(manifest, images, args.threads, args.duration, args.rounds)
    with tempfile.TemporaryDirectory(prefix="vlarena-bench-serving-") as tmp:
        names = bench_repository(Path(tmp) / "repository", manifest, args.threads)
        with LocalTriton(Path(tmp) / "repository", load_models=names, workdir=Path(tmp)) as server:
            cells += asyncio.run(run_triton(server, images, levels, args.duration, args.rounds))
    qdq = qdq_op_counts(manifest.path_of("vision", "int8"))
    summary = report(cells, manifest, qdq)
    cpu = describe_cpu()
    print_tables(cells, manifest, summary, onnx, cpu)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "cells": [asdict(c) for c in cells],
        "onnxruntime": onnx,
        "accuracy": manifest.accuracy,
        "summary": summary,
        "threads": args.threads,
        "int8Recipe": manifest.parts["vision"].recipes.get("int8"),
        "cpu": cpu,
    }
    (args.out / "serving.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {args.out / 'serving.json'}")
    return 0 if summary["batchingMet"] and summary["int8Met"] else 1


if __name__ == "__main__":
    sys.exit(main())
