"""The Celery app of the workers, their one task, and `run_worker`, which starts a worker."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_ready, worker_shutdown, worker_shutting_down
from prometheus_client import REGISTRY, start_http_server

from vlarena.jobs.dispatch import RUN_NEXT_JOB_TASK, celery_config, celery_queue
from vlarena.jobs.store import QUEUES
from vlarena.json_logs import configure_logging
from vlarena.settings import Settings, get_settings
from vlarena.worker.metrics import RunningJobGauges
from vlarena.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

celery_app = Celery("vlarena", config_source=celery_config(get_settings()))

# One runtime per worker process: workers use the solo pool, so tasks run in the process that
# received the signals below.
_runtime: WorkerRuntime | None = None
_queues: list[str] = ["cpu"]


@celery_app.task(name=RUN_NEXT_JOB_TASK, ignore_result=True)
def run_next_job(queue: str) -> None:
    """Takes the next job from `queue` (highest priority first) and runs it to its end."""
    assert _runtime is not None, "the worker runtime starts with the worker"
    _runtime.run_next(queue)


@setup_logging.connect
def _configure_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connected, this replaces Celery's own log set-up: the worker logs JSON lines like the
    # gateway, and the records of a job's attempt carry its id.
    settings = get_settings()
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    configure_logging(level or settings.log_level, settings.log_format)


@worker_ready.connect
def _start_runtime(**_: Any) -> None:
    global _runtime
    settings = get_settings()
    _runtime = WorkerRuntime(settings, _queues, celery_app)
    _runtime.start()
    if settings.worker_metrics_port:
        REGISTRY.register(RunningJobGauges(_runtime.running_job))
        start_http_server(settings.worker_metrics_port)
    # Import the ML core (torch) now, in the background, so the first job starts at once.
    threading.Thread(target=_preload_ml_core, name="vlarena-preload", daemon=True).start()


def _preload_ml_core() -> None:
    try:
        import vlarena.experiments.jobs  # noqa: F401
    except Exception:
        log.warning("could not preload the ML core; jobs will fail to import it", exc_info=True)


@worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    # SIGTERM (scale-in, rolling update): the running job checkpoints, is requeued, and the
    # worker exits after it instead of waiting for the job to finish.
    if _runtime is not None:
        _runtime.shutdown.set()


@worker_shutdown.connect
def _stop_runtime(**_: Any) -> None:
    if _runtime is not None:
        _runtime.stop()


def resolve_queues(setting: str, kubernetes: bool = False) -> list[str]:
    """`cpu`, `gpu`, `cluster` or a comma-separated mix, or `auto`: cpu, plus gpu when CUDA is
    available, plus cluster when the worker may launch Kubernetes Jobs."""
    if setting.strip() == "auto":
        import torch

        queues = ["cpu", "gpu"] if torch.cuda.is_available() else ["cpu"]
        return [*queues, "cluster"] if kubernetes else queues
    queues = [q.strip() for q in setting.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown or not queues:
        raise ValueError(f"worker queues must be among {', '.join(QUEUES)}; got {setting!r}")
    if "cluster" in queues and not kubernetes:
        raise ValueError(
            "the cluster queue holds multi-node jobs: serve it only with "
            "VLARENA_KUBERNETES_ENABLED=true"
        )
    return queues


def run_worker(settings: Settings | None = None, *, loglevel: str = "INFO") -> int:
    """Starts a worker in this process: one job at a time, from the configured queues."""
    global _queues
    settings = settings or get_settings()
    _queues = resolve_queues(settings.worker_queues, settings.kubernetes_enabled)
    celery_app.conf.update(celery_config(settings))
    argv = [
        "worker",
        "--pool=solo",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--queues={','.join(celery_queue(q) for q in _queues)}",
        f"--hostname=vlarena-{os.getpid()}@%h",
        f"--loglevel={loglevel}",
    ]
    celery_app.worker_main(argv)
    return 0
