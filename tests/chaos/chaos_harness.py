"""The chaos suite: a local platform under faults, and the one line that says what survived.

A scenario starts, on 127.0.0.1 and free ports with its own key prefix and artifact directory,
redis-server with AOF, the gateway, worker processes under a supervisor that restarts any that
dies (as a Deployment would), and where asked Triton (the nvidia-pytriton wheel's server) with
`vlarena triton-sync`. It submits tiny train jobs that checkpoint through the API and, while they
run, injects its faults:

- SIGKILLs of workers, most of them of a worker running a job (spread so that no job is killed
  more often than its retries allow: `kill_cap` < `maxRetries`), a few of idle or booting ones;
- one kill -9 of redis-server, restarted on its AOF on the same port;
- one SIGSTOP of a worker running a job, held until the reaper has taken its attempt (past the
  lease), then SIGCONT: the stale worker must be fenced;
- one SIGKILL of Triton's process group while requests are being served, restarted as a
  supervisor would: inference answers 503 (never 500) meanwhile and recovers;
- a Redis stall at a job's final write: a TCP proxy between the platform and Redis stops Redis
  (SIGSTOP) the moment a worker sends the `finish` of a succeeded attempt, for longer than the
  workers' and the gateway's call timeouts but within the lease (run with maxRetries 0).

Then every accepted job is checked through the API: terminal, SUCCEEDED exactly once (one
`succeeded` attempt, one Succeeded event, one registered version), its artifacts on disk and
parsable, its progress exactly its budget. It ends with one line:

    chaos: N jobs, K kills, <other faults>, succeeded X, failed Y, stuck Z, double-completions D,
    lost L

(lost: an accepted job the API no longer knows; stuck: a job not terminal by the deadline.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

API_KEY = "chaos-admin-key-0123456789abcdef"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
# The arguments of a succeeded attempt's `finish` script call, as the Redis protocol spells them.
FINISH_SUCCEEDED = b"$9\r\nsucceeded\r\n"


class ChaosError(RuntimeError):
    """The chaos stack could not be set up (not a finding about the platform)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise ChaosError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _process_state(pid: int) -> str:
    """The one-letter state of /proc/<pid>/stat (T: stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[0]


# --- the scenario ----------------------------------------------------------------------------


@dataclass
class Scenario:
    """What one chaos run does."""

    name: str
    jobs: int
    kills: int  # worker SIGKILLs to inject (at least)
    workers: int = 2
    max_retries: int = 6
    kill_cap: int = 3  # SIGKILLs (and stalls) of one job at most; < max_retries
    redis_kill: bool = True
    worker_stall: bool = True
    triton_kill: bool = False
    redis_stall_s: float = 0.0  # > 0: Redis stopped this long at the first job's final write
    lease_seconds: float = 4.0
    samples: int = 640
    checkpoint_every_steps: int = 5
    deadline_s: float = 170.0
    idle_kill_share: float = 0.1  # of the kills, those of a worker that runs no job
    seed: int | None = None
    # On a fast machine `jobs` can all end before the planned faults happened: one more job is
    # submitted whenever fewer than `workers` are left unfinished, up to this many in all.
    max_jobs: int | None = None

    def __post_init__(self) -> None:
        if self.kills and self.kill_cap >= self.max_retries:
            raise ValueError("kill_cap must stay below max_retries: a job must survive its kills")


def chaos_spec(scenario: Scenario, index: int, run_id: str, *, export: bool) -> dict[str, Any]:
    """A tiny train job (the platform tests' size) that checkpoints every few steps."""
    return {
        "type": "train",
        "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
        "dataset": {"name": "fashion-grid", "options": {"n_train": 64, "n_val": 16, "n_test": 32}},
        "budget": {"samples": scenario.samples},
        "hyperparameters": {
            "batchSize": 16,
            "checkpointEverySteps": scenario.checkpoint_every_steps,
            "logEverySteps": 5,
        },
        "evaluation": {
            "curvePoints": 0,
            "maxImages": 16,
            "generateImages": 4,
            "latencyRepeats": 0,
            "retrievalPools": [8],
        },
        "export": export,
        "modelName": f"chaos-{run_id}-{index}",
        "maxRetries": scenario.max_retries,
        "submissionId": f"chaos-{run_id}-{index}",
        "metadata": {"chaos": scenario.name},
    }


# --- processes -------------------------------------------------------------------------------


class RedisServer:
    """redis-server with AOF on a fixed port, so that it can be killed and started again on the
    same files and address."""

    def __init__(self, root: Path, logs: Path, fsync: str = "everysec") -> None:
        self.dir = root
        self.logs = logs
        self.port = free_port()
        self.fsync = fsync
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        argv = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.fsync,
            "--save",
            "",
            "--maxmemory",
            "1gb",
            "--maxmemory-policy",
            "noeviction",
        ]
        log = (self.logs / f"redis-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            wait_until(lambda: self._alive() and client.ping(), 30, "redis-server", 0.05)
        finally:
            client.close()

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise ChaosError(
                f"redis-server exited:\n{log_tail(self.logs / f'redis-{self.starts}.log')}"
            )
        return True

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        if self.process is not None:
            _stop_process(self.process)


class StallProxy:
    """A TCP proxy in front of Redis. The first `stalls` times a client sends a succeeded
    attempt's final write, it stops redis-server (SIGSTOP, seen stopped before the bytes go on)
    and resumes it `stall_s` later."""

    def __init__(self, server: RedisServer, stall_s: float, stalls: int = 1) -> None:
        self.server = server
        self.stall_s = stall_s
        self.remaining = stalls
        self.port = free_port()
        self.stalls: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pump(reader, up_writer, watch=True),
            self._pump(up_reader, writer, watch=False),
            return_exceptions=True,
        )

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, watch: bool
    ) -> None:
        tail = b""
        try:
            while data := await source.read(65536):
                if watch and self.remaining > 0 and FINISH_SUCCEEDED in tail + data:
                    job = re.search(rb"job-[0-9a-f]+", data)
                    self._stall(job.group().decode() if job else "?")
                tail = data[-len(FINISH_SUCCEEDED) :]
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()

    def _stall(self, job_id: str) -> None:
        self.remaining -= 1
        pid = self.server.pid
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 2
        while _process_state(pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.001)
        started = time.monotonic()
        self.stalls.append({"job": job_id, "seconds": self.stall_s})
        self._loop.call_later(self.stall_s, self._resume, pid, started)

    def _resume(self, pid: int, started: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        self.stalls[-1]["seconds"] = round(time.monotonic() - started, 1)

    @property
    def stalled(self) -> bool:
        return _process_state(self.server.pid) == "T"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            os.kill(self.server.pid, signal.SIGCONT)

        async def shut() -> None:
            if self._server is not None:
                self._server.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class Gateway:
    """`python -m vlarena.gateway` on a free port."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env | {"VLARENA_GATEWAY_PORT": str(self.port), "VLARENA_GATEWAY_WORKERS": "1"}
        self.log = logs / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vlarena.gateway"],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise ChaosError(f"the gateway exited:\n{log_tail(self.log)}")
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200

        try:
            wait_until(ready, 90, "the gateway", 0.2)
        except ChaosError as exc:
            raise ChaosError(f"{exc}\n{log_tail(self.log)}") from None

    def close(self) -> None:
        if self.process is not None:
            _stop_process(self.process)


class WorkerSupervisor:
    """Worker processes (`python -m vlarena.worker`); any that exits is started again."""

    def __init__(self, env: dict[str, str], logs: Path, count: int) -> None:
        self.env = env
        self.logs = logs
        self.count = count
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.started = 0
        self.killed: set[int] = set()  # pids this harness SIGKILLed
        self.unexpected_exits: list[tuple[int, int | None, str]] = []
        self.stopped: set[int] = set()  # pids held with SIGSTOP
        self._due: list[float] = []  # when to start the replacements of exited workers
        self._log_of_process: dict[int, Path] = {}

    def spawn(self) -> int:
        self.started += 1
        process = subprocess.Popen(
            [sys.executable, "-m", "vlarena.worker"],
            env=self.env,
            stdout=(self.logs / f"worker-{self.started}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.processes[process.pid] = process
        self._log_of_process[process.pid] = self.logs / f"worker-{self.started}.log"
        return process.pid

    def start(self) -> None:
        for _ in range(self.count):
            self.spawn()

    def supervise(self) -> None:
        """Starts a replacement for every worker that exited: at once after a kill, 2 s later
        after an exit of its own (a crash loop restarts slowly, as a kubelet's would)."""
        now = time.monotonic()
        for pid, process in list(self.processes.items()):
            code = process.poll()
            if code is None:
                continue
            del self.processes[pid]
            if pid in self.killed:
                self._due.append(now)
            else:
                last = self._log_of_process.get(pid)
                line = log_tail(last, 300).strip().splitlines()[-1:] if last else []
                self.unexpected_exits.append((pid, code, line[0] if line else ""))
                self._due.append(now + 2.0)
        for due in sorted(self._due):
            if due <= now:
                self._due.remove(due)
                self.spawn()

    def alive(self) -> list[int]:
        return [pid for pid, p in self.processes.items() if p.poll() is None]

    def kill(self, pid: int) -> None:
        self.killed.add(pid)
        self.processes[pid].send_signal(signal.SIGKILL)
        self.processes[pid].wait()

    def stop(self, pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)
        self.stopped.add(pid)

    def cont(self, pid: int) -> None:
        os.kill(pid, signal.SIGCONT)
        self.stopped.discard(pid)

    def close(self) -> None:
        processes = list(self.processes.values())
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class TritonServing:
    """A local tritonserver (serving/triton.py's LocalTriton) with `vlarena triton-sync`."""

    def __init__(self, root: Path, env: dict[str, str], logs: Path) -> None:
        from vlarena.serving.triton import LocalTriton

        self.root = root
        self.server = LocalTriton(root / "repository", workdir=root / "server")
        self.env = env | {"VLARENA_TRITON_URL": self.server.grpc_url}
        self.logs = logs
        self.sync: subprocess.Popen[bytes] | None = None

    @staticmethod
    def unavailable() -> str | None:
        """Why no local Triton can run here, or None."""
        try:
            from vlarena.serving.triton import pytriton_root

            pytriton_root()
        except Exception as exc:  # the wheel is missing or lacks its server
            return f"no local Triton: {exc}"
        return None

    def start(self) -> None:
        self.server.start(timeout=180)
        self.sync = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vlarena.cli",
                "triton-sync",
                "--repository",
                str(self.server.repository),
                "--triton-url",
                self.server.grpc_url,
                "--interval",
                "2",
            ],
            env=self.env,
            stdout=(self.logs / "triton-sync.log").open("ab"),
            stderr=subprocess.STDOUT,
        )

    def kill9(self) -> None:
        """SIGKILL of the server and its python-backend stubs (its process group), as a crashed
        container goes."""
        process = self.server.process
        assert process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self.server.process = None

    def restart(self) -> None:
        self.server.start(timeout=180)

    def close(self) -> None:
        if self.sync is not None:
            _stop_process(self.sync)
        self.server.stop()


# --- the run ---------------------------------------------------------------------------------


@dataclass
class JobVerdict:
    job_id: str
    outcome: str  # succeeded, failed, stuck, lost
    double: bool = False
    problems: list[str] = field(default_factory=list)
    kills: int = 0
    attempts: int = 0


@dataclass
class ChaosReport:
    scenario: Scenario
    jobs: list[JobVerdict]
    kills: int
    kills_mid_job: int
    faults: list[str]
    notes: list[str]
    problems: list[str]  # faults that did not happen as planned, or went wrong
    wall_s: float

    def count(self, outcome: str) -> int:
        return sum(1 for j in self.jobs if j.outcome == outcome and not j.double)

    @property
    def doubles(self) -> int:
        return sum(1 for j in self.jobs if j.double)

    @property
    def line(self) -> str:
        order = ("1 redis kill", "1 stall", "1 triton kill", "triton kill skipped")
        ranked = sorted(self.faults, key=lambda f: order.index(f) if f in order else len(order))
        faults = "".join(f"{f}, " for f in ranked)
        return (
            f"chaos: {len(self.jobs)} jobs, {self.kills} kills, {faults}"
            f"succeeded {self.count('succeeded')}, failed {self.count('failed')}, "
            f"stuck {self.count('stuck')}, double-completions {self.doubles}, "
            f"lost {self.count('lost')}"
        )

    @property
    def ok(self) -> bool:
        return self.count("succeeded") == len(self.jobs) and not self.doubles and not self.problems

    def details(self) -> str:
        lines = [f"scenario {self.scenario.name}: {self.wall_s:.0f} s wall-clock"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        for j in self.jobs:
            if j.outcome != "succeeded" or j.double or j.problems:
                flag = " DOUBLE-COMPLETION" if j.double else ""
                lines.append(
                    f"  {j.job_id}: {j.outcome}{flag} after {j.attempts} attempts, "
                    f"{j.kills} kills: {'; '.join(j.problems)}"
                )
        return "\n".join(lines)


class ChaosRun:
    """Starts the stack, submits the jobs, injects the faults, checks every job, stops all."""

    def __init__(self, scenario: Scenario, root: Path, say: Callable[[str], None] = print) -> None:
        self.scenario = scenario
        self.root = Path(root)
        self.say = say
        self.rng = random.Random(scenario.seed)
        self.run_id = uuid.uuid4().hex[:6]
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(self.root / "redis", self.logs)
        self.proxy: StallProxy | None = None
        self.gateway: Gateway | None = None
        self.workers: WorkerSupervisor | None = None
        self.triton: TritonServing | None = None
        self.job_ids: list[str] = []
        self.jobs: dict[str, dict[str, Any]] = {}  # the last view of each job
        self.kills_of: Counter[str] = Counter()  # SIGKILLs (and the stall) aimed at each job
        self.kills = 0
        self.kills_mid_job = 0
        self.faults: list[str] = []
        self.notes: list[str] = []
        self.problems: list[str] = []
        self.findings: list[str] = []  # anomalies that lose no work
        self.seen_attempt: dict[tuple[str, int], float] = {}
        self._next_kill = 0.0
        self._kill_delay = 0.0
        self._ended_at_draw = 0  # jobs ended when the kill delay was drawn
        self._next_kill_idle = False
        self.kill_log: list[tuple[str, int, str]] = []  # (idle | job, pid, job id)
        self._stall: dict[str, Any] | None = None
        self._stall_done = False
        self._redis_done = False
        self._triton_thread: threading.Thread | None = None
        self._triton_result: dict[str, Any] = {}
        self._served_job: str | None = None

    # --- set-up --------------------------------------------------------------------------

    def env(self, redis_url: str) -> dict[str, str]:
        s = self.scenario
        keys = [{"name": "chaos", "key": API_KEY, "scopes": ["admin"]}]
        env = {
            **os.environ,
            "VLARENA_REDIS_URL": redis_url,
            "VLARENA_KEY_PREFIX": f"chaos-{self.run_id}:",
            "VLARENA_ARTIFACT_DIR": str(self.root / "artifacts"),
            "VLARENA_API_KEYS": json.dumps(keys),
            "VLARENA_WORKER_QUEUES": "cpu",
            # One thread per worker: workers share two cores.
            "VLARENA_NUM_THREADS": "1",
            "VLARENA_LEASE_SECONDS": str(s.lease_seconds),
            "VLARENA_HEARTBEAT_SECONDS": str(min(1.0, s.lease_seconds / 8)),
            "VLARENA_REAPER_INTERVAL_SECONDS": str(min(1.0, s.lease_seconds / 8)),
            "VLARENA_RETRY_BACKOFF_SECONDS": "0",
            # The platform fails a job whose attempts lost their worker this often (PoisonJob):
            # here the kills are the harness's, so maxRetries is the limit that binds.
            "VLARENA_POISON_JOB_LIMIT": str(s.max_retries + 1),
            "VLARENA_RATE_LIMIT_REQUESTS": "0",
            "VLARENA_MAX_ACTIVE_JOBS_PER_CALLER": "0",
            "VLARENA_GATEWAY_ACCESS_LOG": "false",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("VLARENA_API_KEY", None)
        return env

    def start(self) -> None:
        s = self.scenario
        if shutil.which("redis-server") is None:
            raise ChaosError("redis-server is not installed (make system-deps)")
        self.redis.start()
        url = self.redis.url
        if s.redis_stall_s > 0:
            self.proxy = StallProxy(self.redis, s.redis_stall_s)
            self.proxy.start()
            url = self.proxy.url
        env = self.env(url)
        if s.triton_kill:
            reason = TritonServing.unavailable()
            if reason:
                self.faults.append("triton kill skipped")
                self.notes.append(f"the Triton kill is skipped: {reason}")
            else:
                self.triton = TritonServing(self.root / "triton", env, self.logs)
                env = self.triton.env
        self.gateway = Gateway(env, self.logs)
        self.gateway.start()
        self.workers = WorkerSupervisor(env, self.logs, s.workers)
        self.workers.start()
        self.gateway.wait_ready()
        if self.triton is not None:
            self._triton_thread = threading.Thread(target=self._triton_step, daemon=True)
            self._triton_thread.start()

    def close(self) -> None:
        if self._triton_thread is not None:
            self._triton_result.setdefault("abandoned", True)
        for part in (self.triton, self.workers, self.gateway, self.proxy, self.redis):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()

    # --- the API -------------------------------------------------------------------------

    def client(self, timeout: float = 10) -> httpx.Client:
        assert self.gateway is not None
        return httpx.Client(
            base_url=self.gateway.url,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=timeout,
        )

    def submit(self, api: httpx.Client) -> None:
        """Submits the next job."""
        i = len(self.job_ids)
        spec = chaos_spec(
            self.scenario, i, self.run_id, export=(i == 0 and self.triton is not None)
        )

        def submitted() -> str | None:
            # Retried with the same submissionId: a retry never makes a second job.
            answer = api.post("/v1/jobs", json=spec)
            return answer.json()["id"] if answer.status_code in (200, 201) else None

        self.job_ids.append(wait_until(submitted, 60, f"job {i} to be accepted", 0.5))

    def submit_all(self, api: httpx.Client) -> None:
        for _ in range(self.scenario.jobs):
            self.submit(api)
        if self.triton is not None:
            self._served_job = self.job_ids[0]

    def plan_done(self) -> bool:
        """Whether every planned fault happened."""
        s = self.scenario
        return (
            self.kills >= s.kills
            and (not s.redis_kill or self._redis_done)
            and (not s.worker_stall or self._stall is not None)
        )

    def maybe_top_up(self, api: httpx.Client) -> None:
        """One more job while the planned faults are not all done and jobs run out."""
        s = self.scenario
        if self.plan_done() or len(self.job_ids) >= (s.max_jobs or s.jobs):
            return
        if len(self.jobs) < len(self.job_ids):  # not every job seen yet
            return
        unfinished = sum(1 for j in self.jobs.values() if j["state"] not in TERMINAL)
        if unfinished < s.workers:
            self.submit(api)

    def refresh(self, api: httpx.Client) -> None:
        """The current view of every job (kept from before while the API does not answer)."""
        try:
            answer = api.get("/v1/jobs", params={"limit": 200})
        except httpx.HTTPError:
            return
        if answer.status_code != 200:
            return
        now = time.monotonic()
        for job in answer.json()["items"]:
            if job["id"] in self.job_ids:
                self.jobs[job["id"]] = job
                attempts = job.get("attempts") or []
                if job["state"] == "RUNNING" and attempts:
                    self.seen_attempt.setdefault((job["id"], attempts[-1]["number"]), now)

    def get_job(self, api: httpx.Client, job_id: str) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError):
            answer = api.get(f"/v1/jobs/{job_id}")
            if answer.status_code == 200:
                return answer.json()
        return None

    def all_terminal(self) -> bool:
        return len(self.jobs) == len(self.job_ids) and all(
            j["state"] in TERMINAL for j in self.jobs.values()
        )

    # --- faults --------------------------------------------------------------------------

    def _running_on_mine(self) -> list[tuple[dict[str, Any], int]]:
        """(job, pid) of jobs running now on a live, not stopped worker of this harness."""
        assert self.workers is not None
        alive = set(self.workers.alive()) - self.workers.stopped
        out = []
        for job in self.jobs.values():
            if job["state"] != "RUNNING" or not job.get("worker"):
                continue
            pid = int(job["worker"].rsplit(":", 1)[1])
            if pid in alive:
                out.append((job, pid))
        return out

    def _confirmed(self, api: httpx.Client, job_id: str, pid: int, attempt: int) -> bool:
        """Whether the job's attempt still runs on `pid`, read just before a signal."""
        job = self.get_job(api, job_id)
        if job is None or job["state"] != "RUNNING" or not job.get("worker"):
            return False
        return (
            int(job["worker"].rsplit(":", 1)[1]) == pid and job["attempts"][-1]["number"] == attempt
        )

    def _ready_workers(self) -> set[int]:
        """Pids of this harness's workers that are alive, not stopped and registered (booted:
        they take jobs and run a reaper)."""
        assert self.workers is not None
        client = redis.Redis(port=self.redis.port, socket_timeout=2, decode_responses=True)
        try:
            registered = client.zrange(f"chaos-{self.run_id}:workers", 0, -1)
        except redis.RedisError:
            return set()
        finally:
            client.close()
        pids = {int(w.rsplit(":", 1)[1]) for w in registered if ":" in w}
        return pids & set(self.workers.alive()) - self.workers.stopped

    def maybe_kill(self, api: httpx.Client) -> None:
        s = self.scenario
        assert self.workers is not None
        if self.kills >= s.kills or time.monotonic() < self._next_kill:
            return
        # One booted worker always survives a kill, as under a rolling disruption budget: some
        # reaper keeps running, and the kills cannot starve the jobs of every worker at once.
        ready = self._ready_workers()
        now = time.monotonic()
        candidates = []
        for job, pid in self._running_on_mine():
            attempt = job["attempts"][-1]["number"]
            seen = self.seen_attempt.get((job["id"], attempt), now)
            if self.kills_of[job["id"]] < s.kill_cap and now - seen >= self._kill_delay:
                candidates.append((self.kills_of[job["id"]], self.rng.random(), job, pid, attempt))
        busy = {pid for _, pid in self._running_on_mine()}
        idle = [p for p in self.workers.alive() if p not in busy and p not in self.workers.stopped]
        idle = [p for p in idle if ready - {p}]
        candidates = [c for c in candidates if ready - {c[3]}]
        if idle and self._next_kill_idle:
            pid = self.rng.choice(idle)
            self.workers.kill(pid)
            self.kills += 1
            self.kill_log.append(("idle", pid, ""))
        elif candidates:
            # The job killed least so far first: kills spread over the jobs.
            _, _, job, pid, attempt = min(candidates, key=lambda c: (c[0], c[1]))
            if not self._confirmed(api, job["id"], pid, attempt):
                return
            self.workers.kill(pid)
            self.kills += 1
            self.kills_mid_job += 1
            self.kills_of[job["id"]] += 1
            self.kill_log.append(("job", pid, job["id"]))
        else:
            # Attempts that end sooner than the drawn delay would never be killed: once a job
            # ended while the delay was pending, a shorter one is drawn.
            ended = sum(1 for j in self.jobs.values() if j["state"] in TERMINAL)
            if ended > self._ended_at_draw:
                self._ended_at_draw = ended
                self._kill_delay = min(self._kill_delay, self.rng.choice([0.0, 0.5, 1.0]))
            return
        self.workers.supervise()
        self._next_kill = time.monotonic() + self.rng.uniform(0.2, 1.2)
        # A few kills hit a worker that runs no job (idle, or still booting).
        self._next_kill_idle = self.rng.random() < s.idle_kill_share
        # Most kills come early in an attempt (while it loads or trains), some late.
        self._kill_delay = self.rng.choice([0.0, 0.5, 1.0, 2.0, 3.0, 5.0])
        self._ended_at_draw = sum(1 for j in self.jobs.values() if j["state"] in TERMINAL)

    def _due(self, share: float) -> bool:
        """Whether a one-off fault is due: once this share of the kills happened, or for a run
        without kills once some job has run for a while."""
        if self.scenario.kills:
            return self.kills >= self.scenario.kills * share
        return any(j["state"] == "RUNNING" for j in self.jobs.values())

    def maybe_stall_worker(self, api: httpx.Client) -> None:
        """SIGSTOP a worker that runs a job until the reaper has taken its attempt (past the
        lease), then SIGCONT it."""
        s = self.scenario
        assert self.workers is not None
        if not s.worker_stall or self._stall_done:
            return
        if self._stall is None:
            if not self._due(0.25):
                return
            choices = [
                (job, pid)
                for job, pid in self._running_on_mine()
                if self.kills_of[job["id"]] < s.kill_cap
            ]
            if not choices:
                return
            job, pid = self.rng.choice(choices)
            attempt = job["attempts"][-1]["number"]
            if not self._confirmed(api, job["id"], pid, attempt):
                return
            self.workers.stop(pid)
            self.kills_of[job["id"]] += 1
            self._stall = {"job": job["id"], "pid": pid, "attempt": attempt, "at": time.monotonic()}
            return
        stall = self._stall
        held = time.monotonic() - stall["at"]
        job = self.jobs.get(stall["job"]) or {}
        taken = any(
            a["number"] == stall["attempt"] and a["outcome"] != "running"
            for a in job.get("attempts") or []
        )
        # Resume it once its attempt was taken and a second more passed (the job may well run
        # elsewhere by then), or at the latest well past the lease.
        if (taken and held > s.lease_seconds + 1) or held > s.lease_seconds + 45:
            self.workers.cont(stall["pid"])
            self._stall_done = True
            self.faults.append("1 stall")
            self.notes.append(
                f"worker {stall['pid']} stopped {held:.1f} s (lease {s.lease_seconds:g} s) while "
                f"it ran attempt {stall['attempt']} of {stall['job']}"
            )
            if not taken:
                self.problems.append(
                    f"the attempt of a worker stopped {held:.0f} s (lease {s.lease_seconds:g} s) "
                    "was never taken from it"
                )

    def maybe_kill_redis(self) -> None:
        if not self.scenario.redis_kill or self._redis_done or not self._due(0.5):
            return
        self._redis_done = True
        started = time.monotonic()
        self.redis.kill9()
        time.sleep(self.rng.uniform(0.5, 1.5))
        self.redis.start()
        self.faults.append("1 redis kill")
        self.notes.append(
            f"redis-server kill -9 at {self.kills} kills, back on its AOF after "
            f"{time.monotonic() - started:.1f} s"
        )

    # --- Triton --------------------------------------------------------------------------

    def _classify(self, api: httpx.Client, body: dict[str, Any]) -> int:
        try:
            return api.post("/v1/classify", json=body).status_code
        except httpx.HTTPError:
            return -1  # no answer (the gateway, not Triton, would be at fault)

    def _triton_step(self) -> None:
        """Serves the first job's model, kills Triton while requests run, restarts it, and
        waits until inference answers again."""
        result = self._triton_result
        assert self.triton is not None
        try:
            self.triton.start()
        except Exception as exc:
            result["skipped"] = f"Triton did not start: {exc}"
            return
        with self.client(timeout=60) as api:
            while self._served_job is None or self._served_job not in self.jobs:
                time.sleep(0.5)
            job_id = self._served_job

            def succeeded() -> dict[str, Any] | None:
                job = self.jobs.get(job_id)
                return job if job and job["state"] in TERMINAL else None

            job = wait_until(succeeded, self.scenario.deadline_s, "the served job", 1.0)
            if job["state"] != "SUCCEEDED" or not job.get("models"):
                result["failed"] = f"the served job ended {job['state']}"
                return
            model = job["models"][0]

            def promoted() -> bool:
                answer = api.post(
                    f"/v1/models/{model['name']}/aliases",
                    json={"alias": "production", "version": model["version"]},
                )
                return answer.status_code == 200

            wait_until(promoted, 60, "the served model to be promoted", 1.0)
            image = io.BytesIO()
            from PIL import Image

            Image.effect_noise((64, 64), 64).convert("RGB").save(image, format="PNG")
            body = {
                "model": model["name"],
                "alias": "production",
                "images": [base64.b64encode(image.getvalue()).decode()],
                "labels": ["a t-shirt", "a bag", "a sneaker"],
            }
            started = time.monotonic()
            wait_until(lambda: self._classify(api, body) == 200, 300, "Triton to serve", 1.0)
            result["first_served_s"] = round(time.monotonic() - started, 1)

            statuses: list[tuple[float, int]] = []
            stop = threading.Event()

            def load() -> None:
                with self.client(timeout=60) as own:
                    while not stop.is_set():
                        statuses.append((time.monotonic(), self._classify(own, body)))
                        time.sleep(0.05)

            loaders = [threading.Thread(target=load, daemon=True) for _ in range(2)]
            for t in loaders:
                t.start()
            wait_until(lambda: sum(1 for _, c in statuses if c == 200) >= 4, 60, "inference", 0.1)
            killed_at = time.monotonic()
            self.triton.kill9()
            time.sleep(1.0)
            self.triton.restart()
            restarted_at = time.monotonic()

            def recovered() -> bool:
                return any(t > restarted_at and c == 200 for t, c in statuses)

            try:
                wait_until(recovered, 240, "inference after the Triton restart", 0.5)
                result["recovered_s"] = round(time.monotonic() - killed_at, 1)
            except ChaosError as exc:
                result["failed"] = str(exc)
            stop.set()
            for t in loaders:
                t.join(70)
            after_kill = Counter(c for t, c in statuses if t >= killed_at)
            result["statuses"] = dict(after_kill)
            result["requests"] = len(statuses)
            bad = {c: n for c, n in after_kill.items() if c not in (200, 502, 503, 504)}
            if bad:
                result["failed"] = (
                    result.get("failed", "") + f" answers other than 200/502/503/504: {bad}"
                ).strip()
            result["done"] = True

    def _triton_outcome(self) -> None:
        if self._triton_thread is None:
            return
        self._triton_thread.join(timeout=300)
        r = self._triton_result
        if r.get("skipped"):
            self.faults.append("triton kill skipped")
            self.notes.append(f"the Triton kill is skipped: {r['skipped']}")
            return
        if not r.get("done"):
            self.problems.append(f"the Triton step did not finish: {r}")
            return
        self.faults.append("1 triton kill")
        self.notes.append(
            f"Triton served after {r.get('first_served_s')} s; SIGKILLed during inference "
            f"({r.get('requests')} requests), answered again {r.get('recovered_s')} s after the "
            f"kill; answers from the kill on: {r.get('statuses')}"
        )
        if r.get("failed"):
            self.problems.append(f"Triton kill: {r['failed']}")

    # --- checks --------------------------------------------------------------------------

    def verify(self, api: httpx.Client, job_id: str) -> JobVerdict:
        verdict = JobVerdict(job_id, "succeeded", kills=self.kills_of[job_id])
        answer = api.get(f"/v1/jobs/{job_id}")
        if answer.status_code == 404:
            verdict.outcome = "lost"
            verdict.problems.append("the API does not know the job any more")
            return verdict
        answer.raise_for_status()
        job = answer.json()
        attempts = job.get("attempts") or []
        verdict.attempts = len(attempts)
        outcomes = [a["outcome"] for a in attempts]
        events = api.get(f"/v1/jobs/{job_id}/events", params={"limit": 10000}).json()["items"]
        reasons = Counter(e["reason"] for e in events)
        if outcomes.count("succeeded") > 1:
            verdict.double = True
            verdict.problems.append(f"attempt outcomes {outcomes}")
        if reasons["Succeeded"] > 1:
            verdict.double = True
            verdict.problems.append(f"{reasons['Succeeded']} Succeeded events")
        name = job["spec"].get("modelName")
        if name:
            versions = api.get(f"/v1/models/{name}/versions")
            items = versions.json()["items"] if versions.status_code == 200 else []
            if len(items) > 1:
                verdict.double = True
                verdict.problems.append(f"{len(items)} registered versions of {name}")
        if job["state"] not in TERMINAL:
            verdict.outcome = "stuck"
            verdict.problems.append(f"{job['state']} at the deadline ({outcomes})")
            return verdict
        if job["state"] != "SUCCEEDED":
            verdict.outcome = "failed"
            verdict.problems.append(f"{job['state']}: {job.get('error')} ({outcomes})")
            return verdict
        verdict.problems += self._artifact_problems(api, job)
        if verdict.problems and not verdict.double:
            verdict.outcome = "failed"
        return verdict

    def _artifact_problems(self, api: httpx.Client, job: dict[str, Any]) -> list[str]:
        problems = []
        job_id = job["id"]
        listing = api.get(f"/v1/jobs/{job_id}/artifacts")
        paths = (
            {a["path"] for a in listing.json()["items"]} if listing.status_code == 200 else set()
        )
        for required in ("metrics.json", "run/result.json", "run/model.pt"):
            if required not in paths:
                problems.append(f"no artifact {required}")
        for document in ("metrics.json", "run/result.json"):
            if document in paths:
                answer = api.get(f"/v1/jobs/{job_id}/artifacts/{document}")
                try:
                    json.loads(answer.content)
                except ValueError:
                    problems.append(f"{document} does not parse ({answer.status_code})")
        workdir = Path(job.get("workdir") or "/nonexistent")
        model = workdir / "run" / "model.pt"
        try:
            with zipfile.ZipFile(model) as archive:
                if archive.testzip() is not None:
                    problems.append(f"{model} is corrupt")
        except (OSError, zipfile.BadZipFile) as exc:
            problems.append(f"{model}: {exc}")
        progress = job.get("progress") or {}
        budget = self.scenario.samples
        if progress.get("samplesSeen") is None:
            # A resumed attempt carries on from the earlier attempts' progress, even one that
            # resumes a checkpoint taken at the end of training and reports no training of its own.
            problems.append(f"SUCCEEDED with no samplesSeen in its progress ({progress or None})")
        elif (progress.get("samplesSeen"), progress.get("totalSamples")) != (budget, budget):
            # Samples counted twice (or skipped) across resumed attempts.
            problems.append(
                f"progress {progress.get('samplesSeen')}/{progress.get('totalSamples')} samples, "
                f"budget {budget}"
            )
        if not (job.get("metrics") or {}).get("final"):
            problems.append("no final metrics")
        lost = [a for a in job["attempts"] if a["outcome"] == "lost"]
        if len(lost) > job["maxRetries"]:
            problems.append(f"{len(lost)} lost attempts, more than maxRetries {job['maxRetries']}")
        return problems

    # --- the whole run -------------------------------------------------------------------

    def run(self) -> ChaosReport:
        s = self.scenario
        started = time.monotonic()
        try:
            self.start()
            with self.client() as api:
                self.submit_all(api)
                self.say(f"chaos {s.name}: {len(self.job_ids)} jobs accepted; injecting faults")
                deadline = started + s.deadline_s
                last_said = time.monotonic()
                while time.monotonic() < deadline:
                    assert self.workers is not None
                    self.workers.supervise()
                    self.refresh(api)
                    self.maybe_top_up(api)
                    if self.all_terminal() and (self._stall is None or self._stall_done):
                        break
                    self.maybe_kill(api)
                    self.maybe_stall_worker(api)
                    self.maybe_kill_redis()
                    if time.monotonic() - last_said > 30:
                        last_said = time.monotonic()
                        states = Counter(j["state"] for j in self.jobs.values())
                        self.say(
                            f"  {time.monotonic() - started:.0f} s: {self.kills} kills, "
                            f"{dict(states)}"
                        )
                    time.sleep(0.25)
                if self._stall is not None and not self._stall_done:
                    self.workers.cont(self._stall["pid"])
                    self._stall_done = True
                    self.faults.append("1 stall")
                self._triton_outcome()
                if s.redis_stall_s > 0:
                    assert self.proxy is not None
                    if self.proxy.stalls:
                        stall = self.proxy.stalls[0]
                        self.notes.append(
                            f"redis-server stopped {stall['seconds']:g} s from the moment a "
                            f"worker sent the final write of {stall['job']}"
                        )
                        self.faults.append(
                            f"1 redis stall of {stall['seconds']:g} s at a final write"
                        )
                    else:
                        self.problems.append("no job reached its final write: Redis never stalled")
                    self.faults.append(f"maxRetries {s.max_retries}")
                verdicts = [self.verify(api, job_id) for job_id in self.job_ids]
        finally:
            self.close()
        self._check_plan()
        if self.workers is not None and self.workers.unexpected_exits:
            exits = self.workers.unexpected_exits
            self.notes.append(
                f"{len(exits)} workers exited without a kill (restarted 2 s later); the first: "
                + "; ".join(
                    f"pid {pid} status {code}: {line[:200]}" for pid, code, line in exits[:3]
                )
            )
        self.notes += [f"finding: {f}" for f in self.findings]
        self.notes.append(
            f"{self.kills} SIGKILLs of workers: {self.kills_mid_job} of a worker running a job, "
            f"{self.kills - self.kills_mid_job} of an idle or booting one; "
            f"kills per job: {sorted(self.kills_of.values(), reverse=True)}; "
            f"{self.workers.started if self.workers else 0} worker processes started"
        )
        return ChaosReport(
            scenario=s,
            jobs=verdicts,
            kills=self.kills,
            kills_mid_job=self.kills_mid_job,
            faults=self.faults,
            notes=self.notes,
            problems=self.problems,
            wall_s=time.monotonic() - started,
        )

    def _check_plan(self) -> None:
        s = self.scenario
        if self.kills < s.kills:
            self.problems.append(f"only {self.kills} of {s.kills} kills happened before the end")
        if s.redis_kill and not self._redis_done:
            self.problems.append("the Redis kill never happened")
        if s.worker_stall and not self._stall_done:
            self.problems.append("the worker stall never happened")


def run_scenario(scenario: Scenario, root: Path, say: Callable[[str], None] = print) -> ChaosReport:
    """Runs `scenario` under `root` (logs in `root/logs`, the report in `root/report.json`),
    prints its details and its `chaos:` line, and appends the line to $VLARENA_CHAOS_LINES."""
    run = ChaosRun(scenario, root, say)
    report = run.run()
    document = {
        "line": report.line,
        "ok": report.ok,
        "wallSeconds": round(report.wall_s, 1),
        "scenario": scenario.__dict__,
        "faults": report.faults,
        "notes": report.notes,
        "problems": report.problems,
        "kills": [{"kind": k, "pid": pid, "job": job} for k, pid, job in run.kill_log],
        "jobs": [j.__dict__ for j in report.jobs],
    }
    (Path(root) / "report.json").write_text(json.dumps(document, indent=1) + "\n")
    say(report.details())
    say(report.line)
    lines = os.environ.get("VLARENA_CHAOS_LINES")
    if lines:
        with Path(lines).open("a") as out:
            out.write(report.line + "\n")
    return report
