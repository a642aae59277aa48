"""`make bench-serving`: the vision encoder (EfficientNet-Lite0 at 128 px, the bulk of every
request's compute) served four ways, side by side in one run, at 1, 8 and 32 concurrent clients
each sending one image per request:

- (a) PyTorch eager in-process, one forward per request;
- (b) Triton (the local `tritonserver`, python backend + onnxruntime), no dynamic batching;
- (c) the same with dynamic batching;
- (d) the INT8 QDQ graph on Triton with dynamic batching;
- (cN), with `--max-batch N`: (c) with its dynamic batch capped at N, in the same rounds;
- (b×K), (c×K), with `--instances K`: (b) and (c) as K model instances of threads/K
  onnxruntime threads each instead of one of all of them, in the same rounds;

- (e), (f): end to end, `POST /v1/embed/image` and `POST /v1/classify` (5 labels) through the
  gateway to Triton: a local stack (`vlarena demo`'s) with a small VL-JEPA trained and promoted
  through its API, or a running gateway given with `--gateway`;

beside them the FP32 and INT8 graphs alone, run by onnxruntime in-process at batch 1, 8 and 32
(what batching and INT8 can give on this CPU without a server). Every configuration is measured
over `--rounds` rounds (7 by default), the configurations of one level interleaved within each
round so that a noisy neighbour slows them alike; each figure is the median over rounds with
its 95% order-statistic interval, and each ratio is taken per round (configurations measured
side by side) before its median and interval. The load average at the start and the end is
printed, and a run that started on a busy machine is marked so. Then the test-split accuracy
of the FP16 and INT8 vision encoders against FP32 (from the export's `serving.json`, exported
again when its INT8 recipe is not the one asked for). Targets, on this CPU: (c) at least 1.25×
(b)'s throughput at 32 clients with a p99 no worse; (d) at least 1.5× (c)'s throughput with a
top-1 drop of at most 1 point, its graph holding QuantizeLinear/DequantizeLinear ops.

Where each Triton request's CPU goes is measured in the same rounds: CPU milliseconds per
request in this process (the clients), in `tritonserver`, and in its python backend's stub
processes (onnxruntime's graph runs there), beside the graph's own CPU per image in-process.
With every core busy, throughput is the cores over the CPU per request; batching can shrink
only the backend's part, so (b)'s CPU per request with its backend replaced by the graph alone
at its best batch size bounds (c)/(b) on this CPU.

Run with `python -m vlarena.bench.serving [--run-dir RUN] [--duration S] [--rounds N]
[--int8-weights auto|full|reduced] [--max-batch N] [--instances K]
[--gateway URL --api-key K --model NAME | --no-gateway] [--out DIR]`; without a run directory it trains (once, cached) a small VL-JEPA on fashion-grid
to measure accuracy with. It writes `<out>/serving.json` and exits non-zero when a target is
missed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from vlarena.bench.limits import BUSY_LOAD, QUIET_WAIT_SECONDS, quiet_load
from vlarena.evaluation.statistics import median_interval
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
class Round:
    """One round of one configuration at one level of concurrency."""

    requests: int
    seconds: float
    p99: float  # seconds
    errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by part (`CpuMeter`)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class CpuMeter:
    """CPU seconds so far (user and system, all threads) of the processes a Triton request
    passes through: this one (`client`: the load generator), `tritonserver` (`server`: its
    gRPC frontend, scheduler and batcher) and the server's children (`backend`: the python
    backend's stub processes, where onnxruntime runs the graph)."""

    PARTS = ("client", "server", "backend")

    def __init__(self, server_pid: int) -> None:
        self._client = psutil.Process()
        self._server = psutil.Process(server_pid)

    @staticmethod
    def _seconds(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # a stub that exited: its CPU is no longer counted
            return 0.0
        return float(times.user + times.system)

    def read(self) -> dict[str, float]:
        children = self._server.children(recursive=True)
        return {
            "client": self._seconds(self._client),
            "server": self._seconds(self._server),
            "backend": sum(self._seconds(child) for child in children),
        }


@dataclass
class Tally:
    """Latencies, wall time and errors of one configuration, round by round."""

    latencies: list[float] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)
    errors: int = 0  # of the round in progress

    @contextlib.contextmanager
    def round(self, meter: CpuMeter | None = None) -> Iterator[list[float]]:
        """Collects one round's latencies (yielded, to append to), errors (`errors`) and,
        with a `meter`, CPU seconds by part, and closes the round."""
        latencies: list[float] = []
        self.errors = 0
        before = meter.read() if meter else {}
        started = time.perf_counter()
        yield latencies
        seconds = time.perf_counter() - started
        cpu = {k: v - before[k] for k, v in meter.read().items()} if meter else {}
        p99 = float(np.percentile(latencies, 99)) if latencies else float("nan")
        self.rounds.append(Round(len(latencies), seconds, p99, self.errors, cpu))
        self.latencies += latencies


@dataclass
class Cell:
    """One configuration at one level of concurrency: medians over rounds with their 95%
    intervals (`*_low`, `*_high`; `coverage` is the interval's actual level)."""

    config: str
    concurrency: int
    requests: int
    seconds: float
    images_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    rounds: int = 1
    ips_low: float = float("nan")
    ips_high: float = float("nan")
    p99_low_ms: float = float("nan")
    p99_high_ms: float = float("nan")
    coverage: float = float("nan")
    # CPU milliseconds per request by part (`CpuMeter.PARTS`, and `all`), medians over rounds.
    cpu_ms: dict[str, float] = field(default_factory=dict)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def cpu_per_request(rounds: list[Round]) -> dict[str, float]:
    """CPU milliseconds per request by part and in all, each the median over `rounds` of
    the round's CPU seconds over its requests; empty when the rounds were not metered."""
    metered = [r for r in rounds if r.cpu and r.requests]
    if not metered:
        return {}
    parts = [*metered[0].cpu, "all"]
    per = {
        part: [
            1000 * (sum(r.cpu.values()) if part == "all" else r.cpu[part]) / r.requests
            for r in metered
        ]
        for part in parts
    }
    return {part: round(float(np.median(values)), 3) for part, values in per.items()}


def _cell(config: str, concurrency: int, tally: Tally) -> Cell:
    rounds = [r for r in tally.rounds if r.requests]
    rate = median_interval([r.rate for r in rounds]) if rounds else None
    p99 = median_interval([r.p99 * 1000 for r in rounds]) if rounds else None
    nan = float("nan")
    return Cell(
        config,
        concurrency,
        len(tally.latencies),
        round(sum(r.seconds for r in tally.rounds), 2),
        round(rate.median, 1) if rate else 0.0,
        round(_percentile(tally.latencies, 50), 1),
        round(p99.median, 1) if p99 else nan,
        sum(r.errors for r in tally.rounds),
        len(tally.rounds),
        round(rate.low, 1) if rate else nan,
        round(rate.high, 1) if rate else nan,
        round(p99.low, 1) if p99 else nan,
        round(p99.high, 1) if p99 else nan,
        round(rate.coverage, 3) if rate else nan,
        cpu_per_request(rounds),
    )


def ratio_interval(numerator: Tally, denominator: Tally) -> dict[str, float]:
    """The per-round ratio of two configurations' throughputs (measured side by side in each
    round): median and 95% interval."""
    ratios = [
        a.rate / b.rate
        for a, b in zip(numerator.rounds, denominator.rounds, strict=True)
        if a.requests and b.requests
    ]
    if not ratios:
        return {"median": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    i = median_interval(ratios)
    return {
        "median": round(i.median, 3),
        "low": round(i.low, 3),
        "high": round(i.high, 3),
        "coverage": round(i.coverage, 3),
        "n": i.n,
    }


# --- (a) PyTorch eager ---------------------------------------------------------------------------
def bench_torch(
    encoder: Any, images: np.ndarray, concurrency: int, duration: float, rounds: int
) -> Cell:
    import torch

    batch = [torch.from_numpy(images[i : i + 1]) for i in range(len(images))]
    encoder(batch[0])  # warm-up
    tally = Tally()
    lock = threading.Lock()
    for _ in range(rounds):
        deadline = time.perf_counter() + duration / rounds
        with tally.round() as latencies:

            def client(k: int, latencies: list[float] = latencies, deadline: float = deadline):
                i = k
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    encoder(batch[i % len(batch)])
                    with lock:
                        latencies.append(time.perf_counter() - started)
                    i += concurrency

            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(client, range(concurrency)))
    return _cell("(a) PyTorch eager, in-process", concurrency, tally)


# --- the graphs alone, in-process --------------------------------------------------------------
ONNX_BATCHES = (1, 8, 32)
PROFILE_BATCH = 8


def bench_onnx(
    manifest: ServingManifest, images: np.ndarray, threads: int, duration: float, rounds: int
) -> dict[str, dict[int, dict[str, float]]]:
    """Images per second of the FP32 and INT8 graphs run by onnxruntime in this process (no
    server) at each of ONNX_BATCHES: the ceiling of (b)-(d), and whether batching pays on
    this CPU at all. Precisions and batch sizes alternate within each of `rounds` rounds;
    each figure is the median over rounds with its interval, and `int8/fp32` is the ratio of
    the two measured side by side in each round. `<precision>-cpu-ms` is the graph's CPU
    milliseconds per image (all of onnxruntime's threads, spinning included)."""
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
    rates: dict[str, dict[int, list[float]]] = {p: {b: [] for b in ONNX_BATCHES} for p in sessions}
    cpu_ms: dict[str, dict[int, list[float]]] = {p: {b: [] for b in ONNX_BATCHES} for p in sessions}
    slot = duration / rounds / len(sessions) / len(ONNX_BATCHES)
    for session in sessions.values():
        session.run(None, {"images": batches[max(ONNX_BATCHES)]})  # warm-up
    for _ in range(rounds):
        for b, batch in batches.items():
            for precision, session in sessions.items():
                done, started, cpu = 0, time.perf_counter(), time.process_time()
                while (elapsed := time.perf_counter() - started) < slot or not done:
                    session.run(None, {"images": batch})
                    done += b
                rates[precision][b].append(done / elapsed)
                cpu_ms[precision][b].append(1000 * (time.process_time() - cpu) / done)

    def summary(values: list[float]) -> dict[str, float]:
        i = median_interval(values)
        return {"median": round(i.median, 2), "low": round(i.low, 2), "high": round(i.high, 2)}

    out: dict[str, dict[int, dict[str, float]]] = {
        p: {b: summary(rates[p][b]) for b in ONNX_BATCHES} for p in sessions
    }
    out["int8/fp32"] = {
        b: summary([i / f for i, f in zip(rates["int8"][b], rates["fp32"][b], strict=True)])
        for b in ONNX_BATCHES
    }
    for precision in sessions:
        out[f"{precision}-cpu-ms"] = {b: summary(cpu_ms[precision][b]) for b in ONNX_BATCHES}
    return out


def onnx_profile(
    manifest: ServingManifest,
    images: np.ndarray,
    threads: int,
    batch: int = PROFILE_BATCH,
    runs: int = 20,
) -> dict[str, dict[str, float]]:
    """Where each graph's time goes on this CPU: onnxruntime's own profile of `runs` runs of
    the FP32 and the INT8 graph at `batch`, as milliseconds per image by operator type (a
    fused node counts under its fused type), largest first."""
    import onnxruntime as ort

    out: dict[str, dict[str, float]] = {}
    batch_images = np.resize(images, (batch, *images.shape[1:]))
    with tempfile.TemporaryDirectory(prefix="vlarena-ort-profile-") as tmp:
        for precision in ("fp32", "int8"):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / precision)
            session = ort.InferenceSession(
                str(manifest.path_of("vision", precision)),
                options,
                providers=["CPUExecutionProvider"],
            )
            for _ in range(runs + 1):  # the first is a warm-up, left out below
                session.run(None, {"images": batch_images})
            out[precision] = profile_by_op(
                json.loads(Path(session.end_profiling()).read_text()), runs * batch
            )
    return out


def profile_by_op(trace: list[dict[str, Any]], images: int) -> dict[str, float]:
    """Milliseconds per image by operator type in an onnxruntime profile `trace` of runs over
    `images` images in all, after its first run (a warm-up), largest first."""
    runs = sorted(e["ts"] + e["dur"] for e in trace if e.get("name") == "model_run")
    warm = runs[0] if runs else 0
    totals: dict[str, float] = {}
    for event in trace:
        op = event.get("args", {}).get("op_name")
        if event.get("cat") == "Node" and op and event["ts"] >= warm:
            totals[op] = totals.get(op, 0.0) + event["dur"] / 1000 / images
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


# --- (b), (c), (d) Triton ------------------------------------------------------------------------
async def closed_loop(
    send: Callable[[int], Awaitable[Any]],
    concurrency: int,
    duration: float,
    tally: Tally,
    meter: CpuMeter | None = None,
) -> None:
    """One round of `duration` seconds of `concurrency` clients each sending one request after
    the other (`send(i)`), added to `tally` (with the CPU `meter` read, if any)."""
    await asyncio.gather(*(send(i) for i in range(min(concurrency, 8))))  # warm-up
    deadline = time.perf_counter() + duration
    with tally.round(meter) as latencies:

        async def client(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await send(i)
                except Exception:
                    tally.errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                i += concurrency

        await asyncio.gather(*(client(k) for k in range(concurrency)))


async def bench_triton(
    pool: TritonPool,
    model: str,
    images: np.ndarray,
    concurrency: int,
    duration: float,
    tally: Tally,
    meter: CpuMeter | None = None,
) -> None:
    """One round of `duration` seconds of `concurrency` clients, added to `tally`."""

    async def one(i: int) -> None:
        await pool.infer(model, 1, {"images": images[i % len(images)][None]}, ["tokens"])

    await closed_loop(one, concurrency, duration, tally, meter)


TRITON_CONFIGS = (
    ("bench.vision.nobatch", "(b) Triton, no dynamic batching"),
    ("bench.vision", "(c) Triton, dynamic batching"),
    ("bench.vision.int8", "(d) Triton INT8, dynamic batching"),
)
CAPPED_MODEL = "bench.vision.capped"
INSTANCES_MODELS = ("bench.vision.nobatch.instances", "bench.vision.instances")


def instance_labels(instances: int) -> tuple[str, str]:
    """The labels of (b) and (c) as `instances` model instances: (b×K) and (c×K)."""
    return f"(b×{instances})", f"(c×{instances})"


def instance_threads(threads: int, instances: int) -> int:
    """onnxruntime threads of each of `instances` model instances sharing `threads`."""
    return max(1, threads // instances)


def triton_configs(
    max_batch: int | None, instances: int | None = None, threads: int = 1
) -> tuple[tuple[str, str], ...]:
    """The Triton models measured and their labels: (b)-(d); with a batch cap N also (cN),
    (c)'s graph batched at most N at a time; with K instances also (b×K) and (c×K), (b) and
    (c) as K instances sharing the `threads`; all measured in the same rounds."""
    configs: tuple[tuple[str, str], ...] = TRITON_CONFIGS
    if max_batch is not None:
        configs += ((CAPPED_MODEL, f"(c{max_batch}) Triton, dynamic batching ≤ {max_batch}"),)
    if instances is not None:
        each = instance_threads(threads, instances)
        layout = f"{instances} instances × {each} thread{'s' if each > 1 else ''}"
        b, c = instance_labels(instances)
        configs += (
            (INSTANCES_MODELS[0], f"{b} Triton, no dynamic batching, {layout}"),
            (INSTANCES_MODELS[1], f"{c} Triton, dynamic batching, {layout}"),
        )
    return configs


def capped(batching: Batching, max_batch: int | None) -> Batching:
    """`batching` with its largest batch capped at `max_batch` (None: as exported), keeping
    the preferred sizes within the cap (the cap itself when none is)."""
    if max_batch is None:
        return batching
    preferred = tuple(b for b in batching.preferred_batch_sizes or () if b <= max_batch)
    return Batching(max_batch, preferred or (max_batch,), batching.max_queue_delay_us)


def bench_repository(
    root: Path,
    manifest: ServingManifest,
    threads: int,
    max_batch: int | None = None,
    instances: int | None = None,
) -> list[str]:
    """The Triton models of (b)-(d): the same FP32 graph without and with dynamic batching,
    and the INT8 graph with it; one instance each. With `max_batch`, also (cN): (c)'s graph
    with its dynamic batch capped at `max_batch`, for a CPU whose graph runs no faster per
    image at larger batches. With `instances`, also (b×K) and (c×K): (b)'s and (c)'s graphs as
    that many instances, each with its share of the threads."""
    part = manifest.parts["vision"]
    dynamic = part.batching
    static = Batching(dynamic.max_batch_size, None, 0)
    fp32, int8 = manifest.path_of("vision"), manifest.path_of("vision", "int8")
    desired = {
        "bench.vision.nobatch": DesiredModel(part.inputs, part.outputs, static, {1: fp32}),
        "bench.vision": DesiredModel(part.inputs, part.outputs, dynamic, {1: fp32}),
        "bench.vision.int8": DesiredModel(part.inputs, part.outputs, dynamic, {1: int8}),
    }
    if max_batch is not None:
        desired[CAPPED_MODEL] = DesiredModel(
            part.inputs, part.outputs, capped(dynamic, max_batch), {1: fp32}
        )
    write_plan(ModelRepository(root, intra_op_threads=threads), desired)
    names = set(desired)
    if instances is not None:
        layout = ModelRepository(
            root,
            instance_count=instances,
            intra_op_threads=instance_threads(threads, instances),
        )
        unbatched, batched = INSTANCES_MODELS
        several = {
            unbatched: DesiredModel(part.inputs, part.outputs, static, {1: fp32}),
            batched: DesiredModel(part.inputs, part.outputs, dynamic, {1: fp32}),
        }
        write_plan(layout, several)
        names |= set(several)
    return sorted(names)


async def run_triton(
    server: LocalTriton,
    images: np.ndarray,
    levels: tuple[int, ...],
    duration: float,
    rounds: int,
    configs: tuple[tuple[str, str], ...] = TRITON_CONFIGS,
) -> tuple[list[Cell], dict[int, dict[str, Tally]]]:
    """At each level of concurrency, `rounds` rounds of `configs` ((b), (c), (d)) in turn,
    each round `duration / rounds` seconds long; the cells and each configuration's rounds."""
    pool = TritonPool(server.grpc_url, size=4, timeout_s=60)
    assert server.process is not None, "the Triton server is not running"
    meter = CpuMeter(server.process.pid)
    cells = []
    tallies: dict[int, dict[str, Tally]] = {}
    try:
        for concurrency in levels:
            tallies[concurrency] = {model: Tally() for model, _ in configs}
            for _ in range(rounds):
                for model, _ in configs:
                    await bench_triton(
                        pool,
                        model,
                        images,
                        concurrency,
                        duration / rounds,
                        tallies[concurrency][model],
                        meter,
                    )
            for model, label in configs:
                cells.append(_cell(label, concurrency, tallies[concurrency][model]))
    finally:
        await pool.close()
    return cells, tallies


# --- (e), (f) through the gateway ---------------------------------------------------------------
GATEWAY_ROUTES = (
    ("embed/image", "(e) gateway → Triton, POST /v1/embed/image"),
    ("classify", "(f) gateway → Triton, POST /v1/classify"),
)
LABELS = ["a t-shirt", "a trouser", "a bag", "a sneaker", "a dress"]


def png_base64(image: np.ndarray) -> str:
    """A (3, H, W) float image in [0, 1] as a base64 PNG."""
    import io

    from PIL import Image

    pixels = (np.clip(image.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def run_gateway(
    url: str,
    api_key: str | None,
    model: str,
    alias: str | None,
    images: list[str],
    levels: tuple[int, ...],
    duration: float,
    rounds: int,
) -> list[Cell]:
    """At each level of concurrency, `rounds` rounds of (e) and (f) in turn through the gateway
    at `url` (one image per request; `alias` or the latest version of `model`)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    target = {"model": model} | ({"alias": alias} if alias else {})
    limits = httpx.Limits(max_connections=max(levels), max_keepalive_connections=max(levels))
    cells = []
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60
    ) as client:
        for concurrency in levels:
            tallies = {route: Tally() for route, _ in GATEWAY_ROUTES}
            for _ in range(rounds):
                for route, _ in GATEWAY_ROUTES:
                    extra = {"labels": LABELS} if route == "classify" else {}

                    async def send(i: int, route: str = route, extra: dict = extra) -> None:
                        body = target | {"image": images[i % len(images)]} | extra
                        answer = await client.post(f"/v1/{route}", json=body)
                        answer.raise_for_status()

                    await closed_loop(send, concurrency, duration / rounds, tallies[route])
            for route, label in GATEWAY_ROUTES:
                cells.append(_cell(label, concurrency, tallies[route]))
    return cells


# The model the gateway serves when the benchmark starts its own stack: a small VL-JEPA trained
# and promoted through the API (its vision encoder is the one measured above).
GATEWAY_MODEL = "bench-serving"
GATEWAY_TRAIN = {
    "type": "train",
    "modelName": GATEWAY_MODEL,
    "model": {"family": "vl-jepa", "config": {"preset": "tiny"}},
    "dataset": {"name": "fashion-grid", "options": {"n_train": 512, "n_val": 64, "n_test": 64}},
    "hyperparameters": {"batchSize": 64},
    "budget": {"samples": 2048},
    "evaluation": {"maxImages": 64, "generateImages": 4, "curvePoints": 0},
}


def gateway_on_local_stack(
    root: Path,
    images: list[str],
    levels: tuple[int, ...],
    duration: float,
    rounds: int,
    say: Callable[[str], None],
) -> list[Cell]:
    """(e) and (f) on `vlarena demo`'s local stack, with GATEWAY_TRAIN trained, promoted and
    served first."""
    from vlarena.client.api import GatewayClient, GatewayError
    from vlarena.demo import local_stack, wait_until

    with local_stack(root, say) as stack, GatewayClient(stack.api_url, stack.api_key) as api:
        job = api.submit_job(GATEWAY_TRAIN)
        say(f"training {GATEWAY_MODEL} through the API (job {job['id']}) ...")
        done = wait_until(
            lambda: (
                (j := api.get_job(job["id"]))["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") and j
            ),
            900,
            "the model to train",
            2.0,
        )
        if done["state"] != "SUCCEEDED":
            raise RuntimeError(f"job {job['id']} ended {done['state']}: {done.get('error')}")
        version = done["models"][0]["version"]
        api.set_alias(GATEWAY_MODEL, "production", version)
        request = {"model": GATEWAY_MODEL, "alias": "production"}

        def served() -> bool:
            try:
                api.infer("classify", request | {"image": images[0], "labels": LABELS})
            except GatewayError as exc:
                if exc.status in (503, 409):
                    return False
                raise
            return True

        wait_until(served, 180, "Triton to load the promoted model", 1.0)
        return asyncio.run(
            run_gateway(
                stack.api_url,
                stack.api_key,
                GATEWAY_MODEL,
                "production",
                images,
                levels,
                duration,
                rounds,
            )
        )


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


def report(
    cells: list[Cell],
    tallies: dict[int, dict[str, Tally]],
    manifest: ServingManifest,
    qdq: dict[str, int],
    onnx: dict[str, dict[int, dict[str, float]]],
    max_batch: int | None = None,
    instances: int | None = None,
) -> dict[str, Any]:
    def at(label: str, concurrency: int) -> Cell:
        return next(
            c for c in cells if c.config.split()[0] == label and c.concurrency == concurrency
        )

    top = max(tallies)
    b, c = at("(b)", top), at("(c)", top)
    rounds = tallies[top]
    batching = ratio_interval(rounds["bench.vision"], rounds["bench.vision.nobatch"])
    int8 = ratio_interval(rounds["bench.vision.int8"], rounds["bench.vision"])
    precisions = manifest.accuracy.get("precisions", {})
    drops = precisions.get("int8", {}).get("deltaPoints", {})
    worst_drop = -min(drops.values(), default=float("nan"))
    summary: dict[str, Any] = {
        "concurrency": top,
        "batchingSpeedup": batching["median"],
        "batchingSpeedupInterval": batching,
        "batchingP99Ms": {"b": b.p99_ms, "c": c.p99_ms},
        "batchingMet": batching_met(batching, c, b),
        # The whole interval past the target: met beyond the noise of this run.
        "batchingMetSurely": batching_met(batching, c, b, surely=True),
        "int8Speedup": int8["median"],
        "int8SpeedupInterval": int8,
        "int8WorstTop1DropPoints": worst_drop,
        "int8QdqOps": qdq,
        "int8Met": bool(
            int8["median"] >= INT8_SPEEDUP_TARGET
            and worst_drop <= INT8_MAX_DROP_POINTS
            and min(qdq.values()) > 0
        ),
    }
    summary |= ceilings(onnx, b)
    server = server_cpu_ratio(rounds["bench.vision.nobatch"], rounds["bench.vision"])
    if server:
        summary["batchingServerCpuRatio"] = server
    if max_batch is not None:
        label = f"(c{max_batch})"
        capped_cell = at(label, top)
        over_b = ratio_interval(rounds[CAPPED_MODEL], rounds["bench.vision.nobatch"])
        summary["capped"] = {
            "label": label,
            "speedupInterval": over_b,
            "overUncappedInterval": ratio_interval(rounds[CAPPED_MODEL], rounds["bench.vision"]),
            "p99Ms": capped_cell.p99_ms,
            "met": batching_met(over_b, capped_cell, b),
            "metSurely": batching_met(over_b, capped_cell, b, surely=True),
        }
    if instances is not None:
        unbatched_k, batched_k = INSTANCES_MODELS
        b_label, c_label = instance_labels(instances)
        bk, ck = at(b_label, top), at(c_label, top)
        batching_k = ratio_interval(rounds[batched_k], rounds[unbatched_k])
        summary["instances"] = {
            "count": instances,
            "unbatchedLabel": b_label,
            "batchedLabel": c_label,
            "speedupInterval": batching_k,
            "p99Ms": {"b": bk.p99_ms, "c": ck.p99_ms},
            "met": batching_met(batching_k, ck, bk),
            "metSurely": batching_met(batching_k, ck, bk, surely=True),
            "unbatchedOverB": ratio_interval(rounds[unbatched_k], rounds["bench.vision.nobatch"]),
            "batchedOverC": ratio_interval(rounds[batched_k], rounds["bench.vision"]),
        }
    return summary


def server_cpu_ratio(unbatched: Tally, batched: Tally) -> dict[str, float] | None:
    """Triton's own CPU per request (`server` and `backend`) unbatched over batched, per
    round side by side: the throughput ratio where Triton has its cores to itself and the
    clients run elsewhere. None when the rounds were not metered."""

    def own(r: Round) -> float:
        return (r.cpu["server"] + r.cpu["backend"]) / r.requests

    ratios = [
        own(u) / own(b)
        for u, b in zip(unbatched.rounds, batched.rounds, strict=True)
        if u.cpu and b.cpu and u.requests and b.requests and own(b) > 0
    ]
    if not ratios:
        return None
    i = median_interval(ratios)
    return {"median": round(i.median, 3), "low": round(i.low, 3), "high": round(i.high, 3)}


def batching_met(
    speedup: dict[str, float], batched: Cell, unbatched: Cell, surely: bool = False
) -> bool:
    """The batching target: the speed-up over (b) at least the target with a p99 no worse; by
    the median, or `surely`: by the whole interval of each."""
    if surely:
        return (
            speedup["low"] >= BATCHING_SPEEDUP_TARGET
            and batched.p99_high_ms <= unbatched.p99_low_ms
        )
    return speedup["median"] >= BATCHING_SPEEDUP_TARGET and batched.p99_ms <= unbatched.p99_ms


def ceilings(onnx: dict[str, dict[int, dict[str, float]]], unbatched: Cell) -> dict[str, Any]:
    """What this CPU allows, from the graphs alone: (c) cannot serve faster than the FP32
    graph runs in-process at its best batch size, so that over (b)'s requests/s bounds (c)/(b);
    and INT8's gain over FP32 in-process at its best batch size bounds (d)/(c). Each with its
    interval ((c)/(b)'s from the two intervals' ends, INT8's from the ratios per round)."""
    best = max(onnx["fp32"], key=lambda b: onnx["fp32"][b]["median"])
    graph = onnx["fp32"][best]
    batching = {
        "batch": best,
        "median": graph["median"] / unbatched.images_per_second,
        "low": graph["low"] / unbatched.ips_high,
        "high": graph["high"] / unbatched.ips_low,
    }
    best8 = max(onnx["int8/fp32"], key=lambda b: onnx["int8/fp32"][b]["median"])
    int8 = {"batch": best8, **onnx["int8/fp32"][best8]}
    out: dict[str, Any] = {
        "batchingCeiling": batching,
        "batchingBeyondThisCpu": batching["high"] < BATCHING_SPEEDUP_TARGET,
        "int8Ceiling": int8,
        "int8BeyondThisCpu": int8["high"] < INT8_SPEEDUP_TARGET,
    }
    by_cpu = cpu_ceiling(onnx.get("fp32-cpu-ms"), unbatched.cpu_ms)
    if by_cpu:
        out["batchingCpuCeiling"] = by_cpu
        out["batchingBeyondByCpu"] = by_cpu["high"] < BATCHING_SPEEDUP_TARGET
    return out


def cpu_ceiling(
    graph_cpu_ms: dict[int, dict[str, float]] | None, unbatched_cpu_ms: dict[str, float]
) -> dict[str, Any] | None:
    """The most (c)/(b) can be where every core is busy, so that throughput is the cores over
    the CPU per request: batching shrinks at best (b)'s backend part to the graph's own CPU
    per image at its cheapest batch size, while the clients' and the server's CPU per request
    stay. The interval spans the graph's. None without both measurements."""
    if not graph_cpu_ms or not unbatched_cpu_ms:
        return None
    best = min(graph_cpu_ms, key=lambda b: graph_cpu_ms[b]["median"])
    graph = graph_cpu_ms[best]
    kept = unbatched_cpu_ms["client"] + unbatched_cpu_ms["server"]
    total = kept + unbatched_cpu_ms["backend"]
    return {
        "batch": best,
        "keptMs": round(kept, 3),
        "median": total / (kept + graph["median"]),
        "low": total / (kept + graph["high"]),
        "high": total / (kept + graph["low"]),
    }


def _batching_line(
    label: str,
    clients: int,
    speedup: dict[str, float],
    p99: float,
    p99_unbatched: float,
    met: bool,
    surely: bool,
    unbatched: str = "(b)",
) -> str:
    """A batched configuration's verdict against `unbatched`: its speed-up with interval,
    p99s."""
    return (
        f"{label}/{unbatched} throughput at {clients} clients: "
        f"{_interval(speedup['median'], speedup['low'], speedup['high'], 2)}× "
        f"= {speedup['median'] / BATCHING_SPEEDUP_TARGET:.2f} of the target "
        f"{BATCHING_SPEEDUP_TARGET}×, p99 {p99:.0f} vs {p99_unbatched:.0f} ms: "
        + ("met" + (" (the whole interval)" if surely else "") if met else "MISSED")
    )


def _width(cells: list[Cell]) -> int:
    """The width of a table's config column: its longest label, and at least 44."""
    return max([44, *(len(c.config) for c in cells)])


def _interval(median: float, low: float, high: float, digits: int = 1) -> str:
    return f"{median:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def print_tables(
    cells: list[Cell],
    manifest: ServingManifest,
    summary: dict[str, Any],
    onnx: dict[str, dict[int, dict[str, float]]],
    cpu: dict[str, Any],
    load: dict[str, float],
    profile: dict[str, dict[str, float]] | None = None,
) -> None:
    model = cpu.get("model", cpu["machine"])
    if "family" in cpu:
        model += f" (family {cpu['family']}, model {cpu.get('modelNumber', '?')})"
    extensions = [name for name in ("avx512", "vnni") if cpu.get(name)]
    print(
        f"\nCPU: {model}, {cpu['cores']} cores, {' + '.join(extensions) or 'no AVX-512 or VNNI'}; "
        f"INT8 recipe {manifest.parts['vision'].recipes.get('int8')}"
    )
    busy = " (BUSY: figures may be noisy)" if load["busy"] else ""
    print(f"load average {load['start']:.2f} at the start, {load['end']:.2f} at the end{busy}")
    n = cells[0].rounds if cells else 0
    coverage = next((c.coverage for c in cells if c.coverage == c.coverage), float("nan"))
    print(
        f"medians over {n} rounds with [order-statistic intervals] of {coverage:.1%} coverage; "
        "ratios are per round, side by side"
    )
    print("\nthe graphs alone: onnxruntime in-process, images/s by batch size")
    print(f"{'batch':>7} {'FP32':>22} {'INT8':>22} {'INT8/FP32':>22}")
    for b in ONNX_BATCHES:
        row = [onnx[k][b] for k in ("fp32", "int8", "int8/fp32")]
        print(
            f"{b:>7} "
            + " ".join(
                f"{_interval(r['median'], r['low'], r['high'], 2 if k == 2 else 1):>22}"
                for k, r in enumerate(row)
            )
        )
    width = _width(cells)
    print(
        f"\n{'config':<{width}} {'clients':>7} {'requests/s':>22} {'p50 ms':>8} "
        f"{'p99 ms':>22} {'errors':>6}"
    )
    for c in sorted(cells, key=lambda c: (c.config[:3], c.concurrency)):
        print(
            f"{c.config:<{width}} {c.concurrency:>7} "
            f"{_interval(c.images_per_second, c.ips_low, c.ips_high):>22} {c.p50_ms:>8.1f} "
            f"{_interval(c.p99_ms, c.p99_low_ms, c.p99_high_ms):>22} {c.errors:>6}"
        )
    print_cpu(cells, onnx)
    acc = manifest.accuracy
    print(f"\naccuracy on {acc.get('images', 0)} test images (vision encoder precision; rest FP32)")
    for precision, entry in acc.get("precisions", {}).items():
        values = ", ".join(
            f"{k} {100 * v:.1f}% ({entry['deltaPoints'][k]:+.1f} pt)"
            for k, v in entry["metrics"].items()
        )
        print(f"  {precision:<5} {values}")
    n = summary["concurrency"]
    bi, ii = summary["batchingSpeedupInterval"], summary["int8SpeedupInterval"]
    p99_b = summary["batchingP99Ms"]["b"]
    print(
        "\n"
        + _batching_line(
            "(c)",
            n,
            bi,
            summary["batchingP99Ms"]["c"],
            p99_b,
            summary["batchingMet"],
            summary["batchingMetSurely"],
        )
    )
    if "capped" in summary:
        cap = summary["capped"]
        cu = cap["overUncappedInterval"]
        line = _batching_line(
            cap["label"],
            n,
            cap["speedupInterval"],
            cap["p99Ms"],
            p99_b,
            cap["met"],
            cap["metSurely"],
        )
        print(f"{line}; {cap['label']}/(c) {_interval(cu['median'], cu['low'], cu['high'], 2)}×")
    if "instances" in summary:
        k = summary["instances"]
        ub, bc = k["unbatchedOverB"], k["batchedOverC"]
        line = _batching_line(
            k["batchedLabel"],
            n,
            k["speedupInterval"],
            k["p99Ms"]["c"],
            k["p99Ms"]["b"],
            k["met"],
            k["metSurely"],
            k["unbatchedLabel"],
        )
        print(
            f"{line}; {k['unbatchedLabel']}/(b) {_interval(ub['median'], ub['low'], ub['high'], 2)}×"
            f", {k['batchedLabel']}/(c) {_interval(bc['median'], bc['low'], bc['high'], 2)}×"
        )
    print(
        f"(d)/(c) throughput at {n} clients: {_interval(ii['median'], ii['low'], ii['high'], 2)}× "
        f"= {ii['median'] / INT8_SPEEDUP_TARGET:.2f} of the target {INT8_SPEEDUP_TARGET}×, "
        f"worst INT8 top-1 drop {summary['int8WorstTop1DropPoints']:.1f} points "
        f"(target ≤ {INT8_MAX_DROP_POINTS}), QDQ ops {summary['int8QdqOps']}: "
        f"{'met' if summary['int8Met'] else 'MISSED'}"
    )
    bc, ic = summary["batchingCeiling"], summary["int8Ceiling"]
    print(
        f"\nwhat this CPU allows (the graphs alone): (c)/(b) at most "
        f"{_interval(bc['median'], bc['low'], bc['high'], 2)}× (the FP32 graph at batch "
        f"{bc['batch']} over (b)), (d)/(c) at most "
        f"{_interval(ic['median'], ic['low'], ic['high'], 2)}× (INT8 over FP32 at batch "
        f"{ic['batch']})"
    )
    for name, beyond, target in (
        ("(c)/(b)", summary["batchingBeyondThisCpu"], BATCHING_SPEEDUP_TARGET),
        ("(d)/(c)", summary["int8BeyondThisCpu"], INT8_SPEEDUP_TARGET),
    ):
        if beyond:
            print(f"  {name}'s target {target}× is beyond this CPU: its whole interval is below")
    if "batchingCpuCeiling" in summary:
        cc = summary["batchingCpuCeiling"]
        print(
            f"what this CPU allows (where (b)'s CPU goes): (c)/(b) at most "
            f"{_interval(cc['median'], cc['low'], cc['high'], 2)}× if batching shrank (b)'s "
            f"backend to the FP32 graph alone at batch {cc['batch']}, the {cc['keptMs']:.2f} ms "
            "of client and server CPU per request kept"
        )
        if "batchingServerCpuRatio" in summary:
            sr = summary["batchingServerCpuRatio"]
            print(
                f"  Triton's own CPU per request (server and backend), (b) over (c): "
                f"{_interval(sr['median'], sr['low'], sr['high'], 2)}×: (c)/(b) where Triton "
                "has the cores to itself and the clients run elsewhere (not measured so here)"
            )
        if summary["batchingBeyondByCpu"]:
            print(
                f"  (c)/(b)'s target {BATCHING_SPEEDUP_TARGET}× is beyond this CPU while those "
                "stay: its whole interval is below"
            )
    if profile:
        print_profile(profile)


def print_cpu(cells: list[Cell], onnx: dict[str, dict[int, dict[str, float]]]) -> None:
    """Where each Triton request's CPU goes, per metered configuration and level, beside the
    graphs' own CPU per image in-process."""
    metered = [c for c in cells if c.cpu_ms]
    if not metered:
        return
    print(
        "\nwhere each request's CPU goes (ms per request, medians over rounds; "
        "busy cores = all × requests/s)"
    )
    parts = [*CpuMeter.PARTS, "all"]
    width = _width(metered)
    print(
        f"{'config':<{width}} {'clients':>7} " + " ".join(f"{p:>8}" for p in parts) + "  busy cores"
    )
    for c in sorted(metered, key=lambda c: (c.config[:3], c.concurrency)):
        busy = c.cpu_ms["all"] * c.images_per_second / 1000
        print(
            f"{c.config:<{width}} {c.concurrency:>7} "
            + " ".join(f"{c.cpu_ms[p]:>8.3f}" for p in parts)
            + f"  {busy:>10.2f}"
        )
    for precision in ("fp32", "int8"):
        graph = onnx.get(f"{precision}-cpu-ms")
        if graph:
            per = ", ".join(f"{graph[b]['median']:.3f} at batch {b}" for b in graph)
            print(f"the {precision.upper()} graph alone, in-process: ms of CPU per image {per}")


def print_profile(profile: dict[str, dict[str, float]], top: int = 8) -> None:
    """The graphs' onnxruntime profiles side by side: ms per image by operator type."""
    ops = [*list(profile["fp32"])[:top], *list(profile["int8"])[:top]]
    print(
        f"\nwhere the graphs' time goes (onnxruntime's profile at batch {PROFILE_BATCH}, "
        "ms per image by operator type)"
    )
    print(f"{'operator':<28} {'FP32':>8} {'INT8':>8}")
    for op in dict.fromkeys(ops):
        fp32, int8 = profile["fp32"].get(op, 0.0), profile["int8"].get(op, 0.0)
        print(f"{op:<28} {fp32:>8.2f} {int8:>8.2f}")
    totals = [sum(profile[p].values()) for p in ("fp32", "int8")]
    print(f"{'all operators':<28} {totals[0]:>8.2f} {totals[1]:>8.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlarena.bench.serving", description=__doc__)
    parser.add_argument(
        "--run-dir", type=Path, help="a trained run to measure (default: train one)"
    )
    parser.add_argument(
        "--duration", type=float, default=14.0, help="seconds per configuration and level"
    )
    parser.add_argument(
        "--rounds", type=int, default=7, help="interleaved rounds the duration is split into"
    )
    parser.add_argument(
        "--int8-weights",
        choices=WEIGHT_RANGE_CHOICES,
        default="auto",
        help="INT8 weight range (auto: reduced on x86 CPUs without VNNI)",
    )
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--gateway", help="measure (e), (f) on this running gateway (default: start a stack)"
    )
    parser.add_argument("--api-key", default=os.environ.get("VLARENA_API_KEY"))
    parser.add_argument("--model", help="the served model --gateway is measured with")
    parser.add_argument("--alias", default="production", help="the model's alias ('' for none)")
    parser.add_argument("--no-gateway", action="store_true", help="skip (e) and (f)")
    parser.add_argument(
        "--max-batch",
        type=int,
        help="also measure (cN): (c) with its dynamic batch capped at N, side by side",
    )
    parser.add_argument(
        "--instances",
        type=int,
        help="also measure (b×K) and (c×K): (b) and (c) as K instances sharing the threads",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_WAIT_SECONDS,
        help="seconds to wait for the load average to fall before starting",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--work", type=Path, help="cache of the trained model (default .cache)")
    args = parser.parse_args(argv)
    levels = tuple(int(c) for c in args.concurrency.split(","))
    if args.max_batch is not None and args.max_batch < 1:
        parser.error("--max-batch must be at least 1")
    if args.instances is not None and args.instances < 2:
        parser.error("--instances must be at least 2 (one instance is (b) and (c) themselves)")
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be at least 1 and --duration positive")
    if args.gateway and not args.model:
        parser.error("--gateway needs --model: the served model to query")

    import torch

    from vlarena.data.images import load_images
    from vlarena.experiments.inputs import Splits, open_dataset
    from vlarena.experiments.runs import trained_dataset
    from vlarena.models.x_encoders import XEncoderConfig, build_x_encoder

    load_start = quiet_load(args.quiet_wait)
    torch.set_num_threads(args.threads)
    weights = weight_range(args.int8_weights)
    work = args.work or Path(".cache") / "bench-serving"
    manifest, run_dir = prepare_export(args.run_dir, work, weights)
    test = Splits.for_training(open_dataset(trained_dataset(RunDir(run_dir)))).test
    images = load_images([r.image for r in test.records[:64]], manifest.image_size)
    encoder = build_x_encoder(XEncoderConfig(image_size=manifest.image_size)).eval()
    cells = [bench_torch(encoder, images, n, args.duration, args.rounds) for n in levels]
    onnx = bench_onnx(manifest, images, args.threads, args.duration, args.rounds)
    profile = onnx_profile(manifest, images, args.threads)
    with tempfile.TemporaryDirectory(prefix="vlarena-bench-serving-") as tmp:
        names = bench_repository(
            Path(tmp) / "repository", manifest, args.threads, args.max_batch, args.instances
        )
        with LocalTriton(Path(tmp) / "repository", load_models=names, workdir=Path(tmp)) as server:
            triton_cells, tallies = asyncio.run(
                run_triton(
                    server,
                    images,
                    levels,
                    args.duration,
                    args.rounds,
                    triton_configs(args.max_batch, args.instances, args.threads),
                )
            )
            cells += triton_cells
    if not args.no_gateway:
        encoded = [png_base64(image) for image in images[:16]]
        if args.gateway:
            cells += asyncio.run(
                run_gateway(
                    args.gateway,
                    args.api_key,
                    args.model,
                    args.alias or None,
                    encoded,
                    levels,
                    args.duration,
                    args.rounds,
                )
            )
        else:
            with tempfile.TemporaryDirectory(prefix="vlarena-bench-stack-") as tmp:
                cells += gateway_on_local_stack(
                    Path(tmp),
                    encoded,
                    levels,
                    args.duration,
                    args.rounds,
                    lambda line: print(line, file=sys.stderr, flush=True),
                )
    load_end = os.getloadavg()[0]
    load = {"start": load_start, "end": load_end, "busy": load_start > BUSY_LOAD}
    qdq = qdq_op_counts(manifest.path_of("vision", "int8"))
    summary = report(cells, tallies, manifest, qdq, onnx, args.max_batch, args.instances)
    cpu = describe_cpu()
    print_tables(cells, manifest, summary, onnx, cpu, load, profile)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "cells": [asdict(c) for c in cells],
        "onnxruntime": onnx,
        "profile": {"batch": PROFILE_BATCH, "msPerImageByOperator": profile},
        "accuracy": manifest.accuracy,
        "summary": summary,
        "threads": args.threads,
        "rounds": args.rounds,
        "loadAverage": load,
        "int8Recipe": manifest.parts["vision"].recipes.get("int8"),
        "cpu": cpu,
    }
    (args.out / "serving.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {args.out / 'serving.json'}")
    return 0 if summary["batchingMet"] and summary["int8Met"] else 1


if __name__ == "__main__":
    sys.exit(main())
