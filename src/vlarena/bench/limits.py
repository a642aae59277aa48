"""`make bench-limits`: what this machine can do at most, through torch on all its threads.

- the peak matrix-product rate (FLOP/s) in each dtype a training step may use: fp32 always,
  bf16 where the CPU multiplies bf16 natively (AVX512-BF16 or AMX; elsewhere torch emulates it
  and a training step stays in fp32);
- memory bandwidth: a large tensor copied (bytes read and written) and summed (bytes read).

Each is measured over several rounds and printed as a median with a 95% interval; the best
round is the peak other benchmarks compare against (model FLOP utilisation). The figures go to
`<out>/limits.json` with the CPU's model, flags and thread count; `load_limits` reads them back,
measuring again when they were taken on another CPU or with another thread count.

Run with `python -m vlarena.bench.limits [--rounds N] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vlarena.evaluation.statistics import median_interval
from vlarena.files import read_json, write_json

GEMM_SIZE = 2048
COPY_BYTES = 512 * 2**20
LIMITS_FILE = "limits.json"


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (or what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(flags: set[str]) -> bool:
    """Whether the CPU multiplies bf16 in hardware (else torch converts to fp32 and back)."""
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def machine() -> dict[str, Any]:
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "nativeBf16": native_bf16(flags),
        "torch": torch.__version__,
    }


def _rounds(fn: Callable[[], object], rounds: int, repeats: int) -> list[float]:
    """Seconds per call of `fn`, one figure per round of `repeats` calls, after a warm-up."""
    fn()
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        out.append((time.perf_counter() - start) / repeats)
    return out


def gemm_rates(dtype: torch.dtype, rounds: int, size: int | None = None) -> list[float]:
    """FLOP/s of (size × size) @ (size × size) products in `dtype`, one per round."""
    size = size or GEMM_SIZE
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    seconds = _rounds(lambda: torch.mm(a, b, out=out), rounds, repeats=3)
    return [2 * size**3 / s for s in seconds]


def bandwidth(rounds: int, nbytes: int | None = None) -> dict[str, list[float]]:
    """Bytes per second copying a tensor of `nbytes` (read + write) and summing it (read)."""
    nbytes = nbytes or COPY_BYTES
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    copy = _rounds(lambda: dst.copy_(src), rounds, repeats=2)
    total = _rounds(lambda: src.sum(), rounds, repeats=2)
    return {"copy": [2 * nbytes / s for s in copy], "read": [nbytes / s for s in total]}


def measure(rounds: int = 7) -> dict[str, Any]:
    info = machine()
    figures: dict[str, Any] = {"machine": info, "gemm": {}, "bandwidth": {}}
    dtypes = [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if info["nativeBf16"] else [])
    for name, dtype in dtypes:
        rates = gemm_rates(dtype, rounds)
        figures["gemm"][name] = {
            "peak": max(rates),
            "interval": median_interval(rates).as_dict(),
        }
    for name, rates in bandwidth(rounds).items():
        figures["bandwidth"][name] = {
            "peak": max(rates),
            "interval": median_interval(rates).as_dict(),
        }
    figures["loadAverage"] = os.getloadavg()[0]
    return figures


def load_limits(out: Path, rounds: int = 7) -> dict[str, Any]:
    """The limits measured on this machine (from `<out>/limits.json`, measured when absent or
    taken on another CPU, thread count or torch)."""
    path = out / LIMITS_FILE
    if path.exists():
        stored = read_json(path)
        if stored.get("machine") == machine():
            return stored
    figures = measure(rounds)
    write_json(path, figures)
    return figures


def peak_flops(limits: dict[str, Any], dtype: str = "fp32") -> float:
    return float(limits["gemm"][dtype]["peak"])


BUSY_LOAD = 0.5  # a load average above this at the start marks a benchmark's figures noisy
QUIET_WAIT_SECONDS = 180.0


def quiet_load(
    wait: float = QUIET_WAIT_SECONDS, sleep: Callable[[float], None] = time.sleep
) -> float:
    """The 1-minute load average once it is at most BUSY_LOAD, waiting up to `wait` seconds for
    it to fall there (what ran just before, another benchmark say, still weighs on it for a
    minute or two); the load then, busy or not."""
    deadline = time.monotonic() + wait
    load = os.getloadavg()[0]
    if load > BUSY_LOAD and wait > 0:
        print(f"load average {load:.2f}: waiting up to {wait:.0f} s for the machine to quiet down")
    while load > BUSY_LOAD and time.monotonic() < deadline:
        sleep(5.0)
        load = os.getloadavg()[0]
    return load


def announce(out: Path) -> tuple[float, dict[str, Any], float]:
    """A benchmark's first line: the CPU, its fp32 peak and the load average, with a warning
    when the machine is busy. Returns the load average, the limits and the peak."""
    load = os.getloadavg()[0]
    limits = load_limits(out)
    peak = peak_flops(limits)
    print(f"{limits['machine']['cpu']}: peak fp32 GEMM {peak / 1e9:.1f} GFLOP/s; load {load:.2f}")
    if load > BUSY_LOAD:
        print(f"  the machine was busy (load average {load:.2f}): figures may be noisy")
    return load, limits, peak


def report(figures: dict[str, Any]) -> str:
    m = figures["machine"]
    lines = [
        f"{m['cpu']} ({m['capability']}), {m['threads']} torch threads of {m['cpus']} CPUs,"
        f" torch {m['torch']}; load average {figures['loadAverage']:.2f} at the start",
    ]
    for name, g in figures["gemm"].items():
        i = g["interval"]
        lines.append(
            f"  GEMM {name} {GEMM_SIZE}²: peak {g['peak'] / 1e9:6.1f} GFLOP/s, median"
            f" {i['median'] / 1e9:.1f} [{i['low'] / 1e9:.1f}, {i['high'] / 1e9:.1f}]"
            f" ({i['coverage']:.0%}, n={i['n']})"
        )
    if not m["nativeBf16"]:
        lines.append("  bf16: not native on this CPU (no AVX512-BF16/AMX); training stays fp32")
    for name, b in figures["bandwidth"].items():
        i = b["interval"]
        lines.append(
            f"  memory {name:4s}: peak {b['peak'] / 1e9:6.1f} GB/s, median"
            f" {i['median'] / 1e9:.1f} [{i['low'] / 1e9:.1f}, {i['high'] / 1e9:.1f}]"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlarena.bench.limits", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    figures = measure(args.rounds)
    write_json(args.out / LIMITS_FILE, figures)
    print(report(figures))
    print(f"wrote {args.out / LIMITS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
