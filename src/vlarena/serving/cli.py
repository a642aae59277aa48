"""`vlarena export`, `vlarena triton` and `vlarena triton-sync`: the serving commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _model_files(run_dir: Path) -> list[Path]:
    """A training run's model file, or each run's in a compare job's directory."""
    from vlarena.training.jobs import find_model

    try:
        return [find_model(run_dir)]
    except FileNotFoundError:
        found = sorted(run_dir.glob("*/seed*/model.pt"))
        if not found:
            raise
        return found


def cmd_export(args: argparse.Namespace) -> int:
    from vlarena.serving.export import export_run
    from vlarena.serving.quantize import weight_range

    weights = weight_range(args.int8_weights) if args.int8_weights else None
    models = _model_files(args.run_dir)
    if args.out and len(models) > 1:
        raise ValueError(f"{args.run_dir} holds {len(models)} models: --out takes one")
    for model_file in models:
        manifest = export_run(
            model_file.parent,
            out_dir=args.out,
            calibration_images=args.calibration_images,
            accuracy_images=args.accuracy_images,
            int8_weights=weights,
            on_event=lambda e: print(e.get("message", e), file=sys.stderr),
        )
        deltas = {
            p: e["deltaPoints"]
            for p, e in manifest.accuracy.get("precisions", {}).items()
            if p != "fp32"
        }
        print(
            json.dumps(
                {
                    "export": str(manifest.directory),
                    "family": manifest.family,
                    "parts": sorted(manifest.parts),
                    "parityOk": manifest.parity.get("ok"),
                    "accuracyDeltaPoints": deltas,
                    "recipes": manifest.parts["vision"].recipes,
                }
            )
        )
    return 0


def cmd_triton(args: argparse.Namespace) -> int:
    from vlarena.serving.config import get_serving_settings
    from vlarena.serving.triton import LocalTriton

    repository = args.repository or get_serving_settings().repository()
    server = LocalTriton(
        repository,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        load_models=args.load or (),
        workdir=args.workdir,
    )
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    server.start(timeout=args.timeout)
    print(
        f"triton: gRPC {server.grpc_url}, HTTP {server.http_url}, metrics {server.metrics_url}; "
        f"repository {repository}; log {server.log_path}",
        flush=True,
    )
    try:
        while not stopping.wait(1.0):
            if not server.running():
                print(f"triton exited:\n{server.log_tail()}", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


async def _sync(args: argparse.Namespace) -> int:
    from vlarena.jobs.keys import RedisKeys
    from vlarena.jobs.lua import LuaScripts
    from vlarena.jobs.registry import ModelRegistry
    from vlarena.jobs.store import connect
    from vlarena.serving.config import get_serving_settings
    from vlarena.serving.repository import ModelRepository
    from vlarena.serving.sync import TritonSync
    from vlarena.settings import get_settings

    settings, serving = get_settings(), get_serving_settings()
    redis = connect(settings)
    keys = RedisKeys(settings.key_prefix)
    registry = ModelRegistry(
        redis, keys, LuaScripts(redis, settings.key_prefix, settings.log_max_entries)
    )
    repository = ModelRepository(
        args.repository or serving.repository(),
        backend=serving.triton_backend,
        instance_kind=serving.triton_instance_kind,
        instance_count=serving.triton_instance_count,
        intra_op_threads=serving.triton_threads,
    )
    sync = TritonSync(
        repository,
        args.triton_url or serving.triton_url,
        redis,
        keys,
        registry,
        interval_s=args.interval or serving.triton_sync_interval_seconds,
    )
    try:
        if args.once:
            report = await sync.reconcile()
            print(json.dumps(report.__dict__))
            return 1 if report.failed else 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(sync.run(stop))
        await stop.wait()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        return 0
    finally:
        await sync.close()
        await redis.aclose()


def cmd_triton_sync(args: argparse.Namespace) -> int:
    from vlarena.json_logs import configure_logging
    from vlarena.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(_sync(args))


def register(sub: Any) -> None:
    """Adds the serving commands to the `vlarena` command's subparsers."""
    p = sub.add_parser(
        "export",
        help="export a trained run for serving: ONNX graphs, FP16/INT8 variants, serving.json",
    )
    p.add_argument("run_dir", type=Path, help="a training run (or a compare job's) directory")
    p.add_argument("--out", type=Path, help="export directory (default RUN/export)")
    p.add_argument("--calibration-images", type=int, default=64, help="training images for INT8")
    p.add_argument(
        "--accuracy-images", type=int, default=200, help="test images for the accuracy deltas"
    )
    p.add_argument(
        "--int8-weights",
        choices=("auto", "full", "reduced"),  # quantize.WEIGHT_RANGE_CHOICES, without onnx
        help="INT8 weight range: reduced (7-bit) for x86 CPUs without VNNI; default: the "
        "int8_weights setting (auto: from this machine's CPU)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "triton", help="run a local Triton (nvidia-pytriton's server) in explicit model control"
    )
    p.add_argument("--repository", type=Path, help="default: <artifact dir>/triton/repository")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--load", action="append", metavar="MODEL", help="load at start (repeatable)")
    p.add_argument("--workdir", type=Path, help="backend folder and log (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")
    p.set_defaults(func=cmd_triton)

    p = sub.add_parser(
        "triton-sync",
        help="keep one Triton replica's repository and models in line with the registry",
    )
    p.add_argument("--repository", type=Path, help="this replica's model repository")
    p.add_argument("--triton-url", help="this replica's gRPC address (default VLARENA_TRITON_URL)")
    p.add_argument("--interval", type=float, help="seconds between full resyncs")
    p.add_argument("--once", action="store_true", help="reconcile once and exit")
    p.set_defaults(func=cmd_triton_sync)
