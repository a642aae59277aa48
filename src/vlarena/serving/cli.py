"""`vlarena triton` and `vlarena triton-sync`: the serving commands."""

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
