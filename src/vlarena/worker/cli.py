"""`vlarena worker`: the command that starts a worker taking jobs from the queues."""

from __future__ import annotations

import argparse

from vlarena.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `worker` to the `vlarena` command."""
    worker = subparsers.add_parser(
        "worker",
        help="run jobs from the queue (a Celery worker)",
        description="Runs jobs one at a time. Configure it with VLARENA_* variables: "
        "VLARENA_REDIS_URL, VLARENA_ARTIFACT_DIR, VLARENA_WORKER_QUEUES, "
        "VLARENA_LEASE_SECONDS, VLARENA_NUM_THREADS, ...",
    )
    worker.add_argument("--queues", help="cpu, gpu, cpu,gpu or auto (VLARENA_WORKER_QUEUES)")
    worker.add_argument("--loglevel", default="INFO", help="log level (default: INFO)")
    worker.set_defaults(func=run_worker_command)


def run_worker_command(args: argparse.Namespace) -> int:
    """Runs a worker in this process until it is stopped; `--queues` overrides the setting."""
    # Imported here: importing the app creates the Celery app from the settings, which
    # building the `vlarena` parser (in the gateway image too) must not do.
    from vlarena.worker.app import run_worker

    settings = get_settings()
    if args.queues:
        settings = settings.model_copy(update={"worker_queues": args.queues})
    return run_worker(settings, loglevel=args.loglevel)
