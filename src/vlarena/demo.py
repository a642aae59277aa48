"""`vlarena demo`: the whole platform on one machine, driven through its API.

It starts a private Redis, Triton (the nvidia-pytriton wheel's server, explicit model control),
a Celery worker, the gateway and the `triton-sync` reconciler as separate processes on free
ports; submits a compare job (token VLM vs VL-JEPA) through the gateway and follows its logs;
promotes the family with the higher image→text recall@1 as `production`; waits until Triton
has loaded it; classifies and captions test images through the gateway; prints where the
report and the artifacts are; and stops everything (or keeps it running with `--keep-running`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from vlarena.client.api import GatewayClient, GatewayError

DEMO_SPEC: dict[str, Any] = {
    "type": "compare",
    "dataset": {"name": "fashion-grid", "options": {"n_train": 8000, "n_val": 500, "n_test": 1000}},
    "hyperparameters": {"batchSize": 64},
    "budget": {"samples": 20000},
    "seeds": 1,
    "evaluation": {"maxImages": 500, "retrievalPools": [100]},
    "metadata": {"origin": "vlarena demo"},
}
SELECTION_METRIC = "i2t_r1@100"
ALIAS = "production"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, OSError):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class LocalStack:
    """The platform's processes on 127.0.0.1, each logging to `<root>/logs/<name>.log`."""

    root: Path
    api_key: str = ""
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (self.root / "logs" / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[name] = process
        return process

    def _alive(self, name: str) -> bool:
        code = self.processes[name].poll()
        if code is not None:
            tail = (self.root / "logs" / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with status {code}:\n{tail}")
        return True

    def start(self, say: Callable[[str], None] = print) -> None:
        from vlarena.gateway.auth import key_digest, new_api_key

        for sub in ("logs", "redis", "artifacts"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: run `make setup`")
        self.ports = {
            name: free_port()
            for name in (
                "redis",
                "gateway",
                "triton_http",
                "triton_grpc",
                "triton_metrics",
                "worker_metrics",
                "prometheus",
            )
        }
        self.api_key = new_api_key()
        keys = [{"name": "demo", "sha256": key_digest(self.api_key), "scopes": ["admin"]}]
        self.env = {
            **os.environ,
            "VLARENA_REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "VLARENA_ARTIFACT_DIR": str(self.root / "artifacts"),
            "VLARENA_API_KEYS": json.dumps(keys),
            "VLARENA_GATEWAY_HOST": "127.0.0.1",
            "VLARENA_GATEWAY_PORT": str(self.ports["gateway"]),
            "VLARENA_TRITON_URL": f"127.0.0.1:{self.ports['triton_grpc']}",
            "VLARENA_TRITON_SYNC_INTERVAL_SECONDS": "5",
            "VLARENA_API_URL": f"http://127.0.0.1:{self.ports['gateway']}",
            "VLARENA_WORKER_METRICS_PORT": str(self.ports["worker_metrics"]),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("VLARENA_API_KEY", None)
        vlarena = [sys.executable, "-m", "vlarena.cli"]
        say(f"redis      127.0.0.1:{self.ports['redis']} (AOF in {self.root / 'redis'})")
        self._spawn(
            "redis",
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.ports["redis"]),
                "--dir",
                str(self.root / "redis"),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
        )
        import redis

        client = redis.Redis(port=self.ports["redis"])
        wait_until(lambda: self._alive("redis") and client.ping(), 20, "redis")
        client.close()
        say(
            f"triton     grpc 127.0.0.1:{self.ports['triton_grpc']}, http :{self.ports['triton_http']}, metrics :{self.ports['triton_metrics']}"
        )
        self._spawn(
            "triton",
            [
                *vlarena,
                "triton",
                "--http-port",
                str(self.ports["triton_http"]),
                "--grpc-port",
                str(self.ports["triton_grpc"]),
                "--metrics-port",
                str(self.ports["triton_metrics"]),
                "--workdir",
                str(self.root / "triton"),
                "--timeout",
                "120",
            ],
        )
        self._spawn("worker", [*vlarena, "worker"])
        self._spawn("gateway", [*vlarena, "gateway"])
        triton_ready = f"http://127.0.0.1:{self.ports['triton_http']}/v2/health/ready"
        wait_until(
            lambda: self._alive("triton") and httpx.get(triton_ready, timeout=2).status_code == 200,
            180,
            "Triton",
        )
        self._spawn("triton-sync", [*vlarena, "triton-sync"])
        wait_until(
            lambda: (
                self._alive("gateway")
                and httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200
            ),
            60,
            "the gateway",
        )
        say(f"gateway    {self.api_url} (OpenAPI at {self.api_url}/docs)")
        wait_until(lambda: self._alive("worker") and self._alive("triton-sync"), 5, "the worker")
        from vlarena.monitoring.prometheus import prepare_local

        self._spawn(
            "prometheus",
            prepare_local(
                self.root / "prometheus",
                gateway=f"127.0.0.1:{self.ports['gateway']}",
                worker=f"127.0.0.1:{self.ports['worker_metrics']}",
                triton=f"127.0.0.1:{self.ports['triton_metrics']}",
                port=self.ports["prometheus"],
            ),
        )
        prometheus = f"http://127.0.0.1:{self.ports['prometheus']}"
        wait_until(
            lambda: (
                self._alive("prometheus")
                and httpx.get(f"{prometheus}/-/ready", timeout=2).status_code == 200
            ),
            30,
            "Prometheus",
        )
        say(f"prometheus {prometheus} (scrapes the gateway, the worker and Triton)")
        say(f"logs       {self.root / 'logs'}")

    def stop(self) -> None:
        """SIGTERM in reverse start order (the worker finishes its task), then SIGKILL."""
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        self.processes.clear()


@contextlib.contextmanager
def local_stack(root: Path, say: Callable[[str], None] = print) -> Iterator[LocalStack]:
    stack = LocalStack(Path(root).resolve())
    try:
        stack.start(say)
        yield stack
    finally:
        stack.stop()


class StageClock:
    """How long each stage of a job took, from its state and progress as the API shows them
    (polled in a thread of its own): queued, then each phase (load-data, encode-features,
    train of each run, train-decoder, evaluate, export, report) in the order they came."""

    def __init__(self, api_url: str, api_key: str, job_id: str, interval: float = 0.5) -> None:
        self.api_url, self.api_key, self.job_id, self.interval = api_url, api_key, job_id, interval
        self.stages: list[list[Any]] = []  # [label, started (monotonic), ended or None]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="vlarena-stage-clock", daemon=True)

    @staticmethod
    def label(job: dict[str, Any]) -> str | None:
        """The stage a job is in, or None once it ended."""
        if job["state"] == "QUEUED":
            return "queued"
        if job["state"] != "RUNNING":
            return None
        progress = job.get("progress") or {}
        phase = progress.get("phase") or "starting"
        return f"{phase} ({progress['run']})" if progress.get("run") else phase

    def note(self, label: str | None, now: float) -> None:
        """Records the stage seen at `now`: a new label closes the stage before it."""
        if self.stages and self.stages[-1][0] == label:
            return
        if self.stages and self.stages[-1][2] is None:
            self.stages[-1][2] = now
        if label is not None:
            self.stages.append([label, now, None])

    def _poll(self) -> None:
        with GatewayClient(self.api_url, self.api_key) as api:
            while not self._stop.is_set():
                with contextlib.suppress(GatewayError, httpx.HTTPError):
                    label = self.label(api.get_job(self.job_id))
                    self.note(label, time.monotonic())
                    if label is None:
                        return
                self._stop.wait(self.interval)

    def __enter__(self) -> StageClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.note(None, time.monotonic())

    def seconds(self) -> list[tuple[str, float]]:
        """(stage, seconds) in order; a stage seen more than once (a retried attempt) adds up
        under its first place."""
        totals: dict[str, float] = {}
        for label, started, ended in self.stages:
            totals[label] = totals.get(label, 0.0) + (ended or started) - started
        return list(totals.items())


def _images(dataset: dict[str, Any], count: int) -> tuple[list[str], list[str]]:
    """Base64 PNGs of the first test images of the job's dataset, and their captions."""
    from vlarena.experiments.inputs import Splits, open_dataset
    from vlarena.jobs.spec import DatasetSpec

    test = Splits.for_training(open_dataset(DatasetSpec.model_validate(dataset))).test
    records = test.records[:count]
    encoded = [base64.b64encode(Path(r.image).read_bytes()).decode() for r in records]
    return encoded, [r.captions[0] for r in records]


def run_demo(
    root: Path,
    spec: dict[str, Any],
    *,
    selection_metric: str = SELECTION_METRIC,
    keep_running: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs the demo; returns what it measured and served (also written to summary.json).

    The family whose first-seed model scores higher on `selection_metric` is promoted."""
    started = time.monotonic()
    timings: list[tuple[str, float]] = []
    with local_stack(root, say) as stack, GatewayClient(stack.api_url, stack.api_key) as api:
        timings.append(("start the local stack", time.monotonic() - started))
        job = api.submit_job(spec)
        job_id = job["id"]
        say(f"\nsubmitted compare job {job_id}; following its logs")
        seeds = spec.get("seeds", 3)
        if seeds < 3:
            say(
                f"  (the demo trains {seeds} seed{'s' if seeds > 1 else ''} per family to stay"
                " short: the report"
                " shows the numbers without a verdict, which needs at least 3 seeds; a compare"
                " job's default is 3)"
            )
        with StageClock(stack.api_url, stack.api_key, job_id) as clock:
            for event in api.follow(job_id):
                if event.event == "end":
                    break
                entry = event.data
                if isinstance(entry, dict) and entry.get("message"):
                    say(f"  {entry['message']}")
        timings += [(f"job: {label}", seconds) for label, seconds in clock.seconds()]
        job = api.get_job(job_id)
        if job["state"] != "SUCCEEDED":
            raise RuntimeError(f"job {job_id} ended {job['state']}: {job.get('error')}")
        summary: dict[str, Any] = {"job": job_id, "apiUrl": stack.api_url, "families": {}}
        for name in sorted(m["name"] for m in api.list_models()["items"]):
            versions = api.versions(name)["items"]
            latest = max(versions, key=lambda v: v["version"])
            summary["families"][latest["family"]] = {
                "model": name,
                "version": latest["version"],
                "metrics": latest.get("metrics") or {},
            }
        best_family = max(
            summary["families"],
            key=lambda f: summary["families"][f]["metrics"].get(selection_metric, -1.0),
        )
        best = summary["families"][best_family]
        for family, info in summary["families"].items():
            say(f"{family:10s} {selection_metric} = {info['metrics'].get(selection_metric)}")
        promoted = time.monotonic()
        api.set_alias(best["model"], ALIAS, best["version"])
        summary["production"] = {"family": best_family, **best}
        say(f"promoted {best['model']} v{best['version']} ({best_family}) as '{ALIAS}'")

        images, truth = _images(spec["dataset"], 4)
        request = {"model": best["model"], "alias": ALIAS, "images": images}
        labels = ["a t-shirt", "a trouser", "a bag", "a sneaker", "a dress"]

        def served() -> tuple[dict[str, Any], list[str]] | None:
            # triton-sync loads the version's graphs one by one: retry until every graph
            # that classify and caption use answers.
            try:
                classified = api.infer("classify", {**request, "labels": labels})
                return classified, api.infer("caption", request)["captions"]
            except GatewayError as exc:
                if exc.status in (503, 409):
                    return None
                raise

        classified, captions = wait_until(served, 180, "Triton to load the production model", 1.0)
        timings.append(("promote, load into Triton, first answers", time.monotonic() - promoted))
        summary["served"] = [
            {"truth": t, "caption": c, "topLabel": r["labels"][0]["label"]}
            for t, c, r in zip(truth, captions, classified["results"], strict=True)
        ]
        say("\nserved through the gateway (top label of 5 | caption | ground truth):")
        for row in summary["served"]:
            say(f"  {row['topLabel']} | {row['caption']} | {row['truth']}")
        listing = api.artifacts(job_id)
        artifacts = [a["path"] for a in listing["items"]]
        report = next((p for p in artifacts if p.endswith("report.html")), None)
        summary["artifacts"] = len(artifacts)
        summary["report"] = str(Path(listing["root"]) / report) if report else None
        summary["reportLink"] = api.report_link(job_id)["url"] if report else None
        say(f"\n{len(artifacts)} artifacts; report: {summary['report']}")
        say(f"report page through the gateway (signed link): {summary['reportLink']}")
        timings.append(("total (set-up excluded)", time.monotonic() - started))
        summary["stages"] = [{"stage": label, "seconds": round(t, 1)} for label, t in timings]
        say("\nhow long each stage took:")
        for label, seconds in timings:
            say(f"  {seconds:7.1f} s  {label}")
        (stack.root / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        if keep_running:
            say(f"\nthe stack keeps running; API key: {stack.api_key}\nCtrl-C stops it")
            with contextlib.suppress(KeyboardInterrupt):
                while all(p.poll() is None for p in stack.processes.values()):
                    time.sleep(1)
    return summary


def cmd_demo(args: argparse.Namespace) -> int:
    spec = json.loads(json.dumps(DEMO_SPEC))
    spec["budget"] = {"samples": args.budget_samples}
    spec["seeds"] = args.seeds
    if args.tiny:
        spec["dataset"]["options"] = {"n_train": 192, "n_val": 32, "n_test": 64}
        spec["model"] = {"config": {"preset": "tiny"}}
        spec["hyperparameters"] = {"batchSize": 32, "warmupSteps": 10, "learningRate": 2e-3}
        spec["evaluation"] = {"maxImages": 64, "retrievalPools": [32], "curvePoints": 2}
        spec["report"] = {"probeImages": 32, "selectiveStreams": 1}
    metric = "i2t_r1@32" if args.tiny else SELECTION_METRIC
    run_demo(args.out, spec, selection_metric=metric, keep_running=args.keep_running)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="the local platform end to end: compare, promote, serve")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="state, logs, artifacts")
    p.add_argument("--budget-samples", type=int, default=DEMO_SPEC["budget"]["samples"])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="tiny data and models (a smoke test)")
    p.add_argument("--keep-running", action="store_true", help="leave the stack up at the end")
    p.set_defaults(func=cmd_demo)
