"""`make bench-gateway`: the gateway against a bare reference app, side by side, on 127.0.0.1.

Both run under uvicorn with two worker processes against one redis-server this benchmark
starts, with auth and per-key rate limiting on (a limit no run reaches, so that every request
is counted in Redis as on a shared cluster). The reference is the least a gateway can do with
the same round trips: FastAPI, one shared async Redis client, a SHA-256 key check, the
gateway's own rate-limit script, and a read of the job's hash from Redis on every GET (no
cached job state). Measured, in one run:

- throughput: `wrk`, 32 connections, on `GET /v1/jobs/{id}` and `POST /v1/jobs` (validateOnly);
  on GET vlarena should reach at least 0.95x the reference's requests per second (on POST the
  reference does not validate the spec, so its ratio is the cost of validation, printed only);
- latency at a fixed offered rate: `hey -q`, 2,000 requests/s in total over 32 connections;
  vlarena's p99 should stay under 50 ms with no errors (the reference's, measured alike, shows
  what the machine itself adds).

Each figure is the median of `--rounds` short runs (7 by default) with its 95% order-statistic
interval, vlarena's and the reference's alternating, so other load on the machine weighs on
both alike; the throughput ratio is taken per round, side by side, before its median. The load
average at the start is printed, and a run that started on a busy machine is marked so. Run
with `python -m vlarena.bench.gateway [--duration S] [--rounds N] [--rate R] [--out DIR]`; it
writes `<out>/gateway.json` and exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, cast

import httpx
from fastapi import FastAPI, Header, HTTPException, Request
from redis.asyncio import Redis

from vlarena.bench.limits import BUSY_LOAD, QUIET_WAIT_SECONDS, quiet_load
from vlarena.evaluation.statistics import median_interval
from vlarena.gateway.limits import CHARGE_SCRIPT

API_KEY = "vlk_bench-key-0123456789abcdef"
CONNECTIONS = 32
THROUGHPUT_RATIO_TARGET = 0.95
P99_TARGET_SECONDS = 0.050
OFFERED_RATE = 2000.0
# Per key and window: far more than any run sends, so the limit counts but never refuses.
BENCH_RATE_LIMIT = 1_000_000_000
VALIDATE_ONLY_SPEC = {
    "type": "train",
    "model": {"family": "vl-jepa", "config": {"preset": "small"}},
    "dataset": {"name": "fashion-grid", "options": {"n_train": 8000}},
    "hyperparameters": {"learningRate": 0.001, "batchSize": 128},
    "budget": {"samples": 20000},
    "resources": {"cpu": 2, "memory": "8Gi"},
    "priority": 5,
    "validateOnly": True,
}


def reference_app() -> FastAPI:
    """The reference: FastAPI, one shared async Redis client, a SHA-256 check of the key and
    the gateway's rate-limit script on every request."""
    redis = Redis.from_url(os.environ["BENCH_REDIS_URL"], decode_responses=True)
    digest = os.environ["BENCH_KEY_SHA256"]
    job_prefix = os.environ["BENCH_KEY_PREFIX"] + "job:"
    limit_key = os.environ["BENCH_KEY_PREFIX"] + "reference-limit:bench"
    charge = redis.register_script(CHARGE_SCRIPT)
    app = FastAPI()

    async def check(authorization: str | None) -> None:
        token = (authorization or "").removeprefix("Bearer ")
        if hashlib.sha256(token.encode()).hexdigest() != digest:
            raise HTTPException(401)
        count, _ = await charge(keys=[limit_key], args=[60_000])
        if int(count) > BENCH_RATE_LIMIT:
            raise HTTPException(429)

    @app.get("/v1/jobs/{job_id}")
    async def get_job(
        job_id: str, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, str]:
        await check(authorization)
        # The client decodes replies (`decode_responses=True`): fields and values are strings.
        job = cast(dict[str, str], await redis.hgetall(job_prefix + job_id))
        if not job:
            raise HTTPException(404)
        return job

    @app.post("/v1/jobs")
    async def submit(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        await check(authorization)
        spec = await request.json()
        await redis.exists(job_prefix + "none")
        return {"valid": True, "spec": spec}

    return app


@dataclass
class Measurement:
    target: str
    endpoint: str
    tool: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    offered_rate: float | None = None
    cpu_ms_per_request: float | None = None
    # Redis's CPU per request meanwhile: the server's work that the app's figure leaves out.
    redis_cpu_ms_per_request: float | None = None
    # 95% intervals of the median over rounds.
    rps_low: float | None = None
    rps_high: float | None = None
    p99_low_ms: float | None = None
    p99_high_ms: float | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Servers:
    urls: dict[str, str]
    pids: dict[str, int]
    job_id: str


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(pid: int) -> float:
    """CPU time used so far by a server and its worker processes (Linux /proc)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(stat.parent.name) == pid or int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


async def _seed_job(redis_url: str, prefix: str) -> str:
    from vlarena.jobs.spec import JOB_SPEC_ADAPTER
    from vlarena.jobs.store import JobStore, connect
    from vlarena.settings import Settings

    settings = Settings(redis_url=redis_url, key_prefix=prefix)
    redis = connect(settings)
    spec = {k: v for k, v in VALIDATE_ONLY_SPEC.items() if k != "validateOnly"}
    record, _ = await JobStore(redis, settings).create(
        JOB_SPEC_ADAPTER.validate_python(spec), owner="bench"
    )
    await redis.aclose()
    return record.id


@contextlib.contextmanager
def running_servers(workdir: Path) -> Iterator[Servers]:
    """redis-server, the vlarena gateway and the reference app, each on a free port."""
    redis_port, vlarena_port, reference_port = _free_port(), _free_port(), _free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    prefix = "bench:"
    logs = workdir / "logs"
    logs.mkdir()
    processes = [
        subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=(logs / "redis.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        time.sleep(0.3)
        job_id = asyncio.run(_seed_job(redis_url, prefix))
        digest = hashlib.sha256(API_KEY.encode()).hexdigest()
        env = {
            **os.environ,
            "VLARENA_REDIS_URL": redis_url,
            "VLARENA_KEY_PREFIX": prefix,
            "VLARENA_API_KEYS": json.dumps(
                [{"name": "bench", "sha256": digest, "scopes": ["submit"]}]
            ),
            "VLARENA_GATEWAY_PORT": str(vlarena_port),
            "VLARENA_GATEWAY_WORKERS": "2",
            "VLARENA_GATEWAY_ACCESS_LOG": "false",
            "VLARENA_RATE_LIMIT_REQUESTS": str(BENCH_RATE_LIMIT),
            "BENCH_REDIS_URL": redis_url,
            "BENCH_KEY_SHA256": digest,
            "BENCH_KEY_PREFIX": prefix,
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "vlarena.gateway"],
                env=env,
                stdout=(logs / "vlarena.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "vlarena.bench.gateway:reference_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(reference_port),
                    "--workers",
                    "2",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=(logs / "reference.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
        servers = Servers(
            urls={
                "vlarena": f"http://127.0.0.1:{vlarena_port}",
                "reference": f"http://127.0.0.1:{reference_port}",
            },
            pids={
                "redis": processes[0].pid,
                "vlarena": processes[1].pid,
                "reference": processes[2].pid,
            },
            job_id=job_id,
        )
        _wait_ready(f"{servers.urls['vlarena']}/readyz")
        _wait_ready(f"{servers.urls['reference']}/docs")
        yield servers
    finally:
        for process in reversed(processes):
            _terminate(process)


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def run_wrk(
    url: str, method: str, body: dict[str, Any] | None, seconds: float, workdir: Path
) -> dict[str, float]:
    """wrk at full speed: requests/s, p50 and p99 (s), errors (non-2xx and socket errors)."""
    script = workdir / f"wrk-{method.lower()}.lua"
    lines = [f'wrk.method = "{method}"', f'wrk.headers["Authorization"] = "Bearer {API_KEY}"']
    if body is not None:
        lines += [
            'wrk.headers["Content-Type"] = "application/json"',
            f"wrk.body = [[{json.dumps(body)}]]",
        ]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> dict[str, float]:
    """Requests/s, request count, p50 and p99 (s) and errors of a `wrk --latency` report."""
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+(?:us|ms|s))$", out, re.MULTILINE))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "p50": _seconds(percentiles["50"]),
        "p99": _seconds(percentiles["99"]),
        "errors": errors,
    }


def run_hey(
    url: str, method: str, body: dict[str, Any] | None, seconds: float, rate: float, workdir: Path
) -> dict[str, float]:
    """hey at a fixed offered rate (`rate` requests/s over all connections)."""
    command = [
        "hey",
        "-z",
        f"{seconds:g}s",
        "-c",
        str(CONNECTIONS),
        "-q",
        f"{rate / CONNECTIONS:g}",
        "-m",
        method,
        "-H",
        f"Authorization: Bearer {API_KEY}",
    ]
    if body is not None:
        payload = workdir / "body.json"
        payload.write_text(json.dumps(body))
        command += ["-T", "application/json", "-D", str(payload)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    return parse_hey(out)


def parse_hey(out: str) -> dict[str, float]:
    """Requests/s, p50 and p99 (s) and failed requests (non-2xx or errors) of a `hey` report."""
    percentiles = dict(re.findall(r"^\s+(\d+)% in ([\d.]+) secs", out, re.MULTILINE))
    statuses = dict(re.findall(r"^\s+\[(\d+)\]\s+(\d+) responses", out, re.MULTILINE))
    failed = sum(int(n) for code, n in statuses.items() if not code.startswith("2"))
    if "Error distribution:" in out:
        errors = out.split("Error distribution:", 1)[1]
        failed += sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", errors, re.MULTILINE))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": float(percentiles["50"]),
        # hey leaves out percentiles it has too few samples for: the slowest bounds them.
        "p99": float(percentiles.get("99") or re.search(r"Slowest:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "errors": failed,
    }


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of several short runs per figure, with 95% intervals of rps and p99 (the
    whole range where there are too few runs for 95%); errors are summed."""
    cpu = [r["cpu"] for r in runs if "cpu" in r]
    redis_cpu = [r["redis_cpu"] for r in runs if "redis_cpu" in r]
    rps = median_interval([r["rps"] for r in runs])
    p99 = median_interval([r["p99"] for r in runs])
    return {
        "cpu": statistics.median(cpu) if cpu else float("nan"),
        "redis_cpu": statistics.median(redis_cpu) if redis_cpu else float("nan"),
        "rps": rps.median,
        "rps_low": rps.low,
        "rps_high": rps.high,
        "p50": statistics.median(r["p50"] for r in runs),
        "p99": p99.median,
        "p99_low": p99.low,
        "p99_high": p99.high,
        "errors": sum(r["errors"] for r in runs),
    }


def _measurement(target: str, endpoint: str, tool: str, r: dict[str, float], **extra: Any):
    return Measurement(
        target,
        endpoint,
        tool,
        r["rps"],
        1000 * r["p50"],
        1000 * r["p99"],
        int(r["errors"]),
        rps_low=r["rps_low"],
        rps_high=r["rps_high"],
        p99_low_ms=1000 * r["p99_low"],
        p99_high_ms=1000 * r["p99_high"],
        **extra,
    )


def benchmark(
    seconds: float, rounds: int, rate: float, workdir: Path
) -> tuple[list[Measurement], dict[str, dict[str, float]]]:
    """Each figure is the median of `rounds` runs of `seconds`; vlarena's and the reference's
    runs alternate, so a change in the machine's other load hits both alike. Also returns, per
    endpoint, the median and interval of vlarena's throughput over the reference's, taken per
    round."""
    results = []
    ratios: dict[str, dict[str, float]] = {}
    with running_servers(workdir) as servers:
        endpoints = {
            "GET /v1/jobs/{id}": ("GET", f"/v1/jobs/{servers.job_id}", None),
            "POST /v1/jobs (validateOnly)": ("POST", "/v1/jobs", VALIDATE_ONLY_SPEC),
        }
        targets = servers.urls
        for endpoint, (method, path, body) in endpoints.items():
            runs: dict[str, list[dict[str, float]]] = {target: [] for target in targets}
            for base in targets.values():
                run_wrk(base + path, method, body, 2, workdir)  # warm-up
            for _ in range(rounds):
                for target, base in targets.items():
                    before = server_cpu_seconds(servers.pids[target])
                    redis_before = server_cpu_seconds(servers.pids["redis"])
                    run = run_wrk(base + path, method, body, seconds, workdir)
                    cpu = server_cpu_seconds(servers.pids[target]) - before
                    redis_cpu = server_cpu_seconds(servers.pids["redis"]) - redis_before
                    count = max(run["requests"], 1)
                    runs[target].append(
                        run | {"cpu": 1000 * cpu / count, "redis_cpu": 1000 * redis_cpu / count}
                    )
            for target, target_runs in runs.items():
                r = _median_run(target_runs)
                results.append(
                    _measurement(
                        target,
                        endpoint,
                        "wrk",
                        r,
                        cpu_ms_per_request=r["cpu"],
                        redis_cpu_ms_per_request=r["redis_cpu"],
                    )
                )
            per_round = [
                ours["rps"] / theirs["rps"]
                for ours, theirs in zip(runs["vlarena"], runs["reference"], strict=True)
            ]
            interval = median_interval(per_round)
            ratios[endpoint] = {
                "median": interval.median,
                "low": interval.low,
                "high": interval.high,
                "coverage": interval.coverage,
                "n": interval.n,
            }
        # The reference at the same offered rate says how much of the tail is the machine's.
        for endpoint, (method, path, body) in endpoints.items():
            runs = {target: [] for target in targets}
            for _ in range(rounds):
                for target, base in targets.items():
                    runs[target].append(run_hey(base + path, method, body, seconds, rate, workdir))
            for target, target_runs in runs.items():
                r = _median_run(target_runs)
                results.append(_measurement(target, endpoint, "hey -q", r, offered_rate=rate))
    return results, ratios


def verdicts(
    results: list[Measurement], ratios: dict[str, dict[str, float]] | None = None
) -> list[tuple[str, bool]]:
    """Each target of the benchmark and whether it was met: the throughput ratio per endpoint
    (its per-round median and interval where `ratios` has it, else the ratio of the medians)
    and vlarena's p99 at the offered rate."""
    checks = []
    full = {(m.target, m.endpoint): m for m in results if m.tool == "wrk"}
    # The reference does not validate a submitted spec: POST's ratio is the cost of validation,
    # printed beside the table, not held to the target.
    for endpoint in sorted({m.endpoint for m in results if m.endpoint.startswith("GET")}):
        ours, reference = full[("vlarena", endpoint)], full[("reference", endpoint)]
        measured = (ratios or {}).get(endpoint)
        ratio = (
            measured["median"]
            if measured
            else ours.requests_per_second / (reference.requests_per_second)
        )
        interval = f" [{measured['low']:.2f}, {measured['high']:.2f}]" if measured else ""
        checks.append(
            (
                f"{endpoint}: {ratio:.2f}x{interval} the reference's requests/s "
                f"= {ratio / THROUGHPUT_RATIO_TARGET:.2f} of the target {THROUGHPUT_RATIO_TARGET}x",
                ratio >= THROUGHPUT_RATIO_TARGET and ours.errors == 0,
            )
        )
    for m in results:
        if m.tool == "hey -q" and m.target == "vlarena":
            interval = (
                f" [{m.p99_low_ms:.1f}, {m.p99_high_ms:.1f}]" if m.p99_low_ms is not None else ""
            )
            checks.append(
                (
                    f"{m.endpoint} at {m.offered_rate:g} req/s: p99 {m.p99_ms:.1f}{interval} ms "
                    f"= {m.p99_ms / (1000 * P99_TARGET_SECONDS):.2f} of the "
                    f"{1000 * P99_TARGET_SECONDS:g} ms target, {m.errors} errors",
                    m.p99_ms < 1000 * P99_TARGET_SECONDS and m.errors == 0,
                )
            )
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=7, help="runs per figure (median)")
    parser.add_argument(
        "--rate", type=float, default=OFFERED_RATE, help="offered rate for the p99 run"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench-out"), help="where gateway.json goes"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_WAIT_SECONDS,
        help="seconds to wait for the load average to fall before starting",
    )
    args = parser.parse_args(argv)
    missing = [tool for tool in ("redis-server", "wrk", "hey") if shutil.which(tool) is None]
    if missing:
        print(f"missing {', '.join(missing)}: run `make system-deps`", file=sys.stderr)
        return 2
    quiet_load(args.quiet_wait)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} at the start", end="")
    print(" (BUSY: figures may be noisy)" if load[0] > BUSY_LOAD else "")
    with tempfile.TemporaryDirectory(prefix="vlarena-bench-") as tmp:
        results, ratios = benchmark(args.duration, args.rounds, args.rate, Path(tmp))
    print(
        f"medians of {args.rounds} runs of {args.duration:g} s with [95% intervals]\n"
        f"{'target':<10} {'endpoint':<30} {'tool':<7} {'req/s':>22} {'p50 ms':>8} "
        f"{'p99 ms':>20} {'errors':>7} {'cpu ms/req':>10} {'redis ms/req':>12}"
    )
    for m in results:
        rps = f"{m.requests_per_second:.0f} [{m.rps_low:.0f}, {m.rps_high:.0f}]"
        p99 = f"{m.p99_ms:.1f} [{m.p99_low_ms:.1f}, {m.p99_high_ms:.1f}]"
        print(
            f"{m.target:<10} {m.endpoint:<30} {m.tool:<7} {rps:>22} "
            f"{m.p50_ms:>8.2f} {p99:>20} {m.errors:>7} "
            + (f"{m.cpu_ms_per_request:>10.3f}" if m.cpu_ms_per_request is not None else "")
            + (
                f" {m.redis_cpu_ms_per_request:>12.3f}"
                if m.redis_cpu_ms_per_request is not None
                else ""
            )
        )
    checks = verdicts(results, ratios)
    for endpoint, r in ratios.items():
        if not endpoint.startswith("GET"):
            print(
                f"      {endpoint}: {r['median']:.2f}x [{r['low']:.2f}, {r['high']:.2f}] the "
                "reference's requests/s (the reference does not validate the spec: no target)"
            )
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "connections": CONNECTIONS,
        "loadAverage": load,
        "busy": load[0] > BUSY_LOAD,
        "runSeconds": args.duration,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "results": [asdict(m) for m in results],
        "ratios": ratios,
        "checks": [{"check": text, "passed": ok} for text, ok in checks],
    }
    (args.out / "gateway.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
