"""`serve`: runs the gateway under uvicorn, one or several worker processes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import uvicorn

from vlarena.json_logs import logging_config
from vlarena.settings import Settings


def prepare_metrics_dir(settings: Settings) -> Path:
    """An empty directory for prometheus_client's multiprocess files, shared by the workers."""
    directory = settings.metrics_dir or Path(tempfile.mkdtemp(prefix="vlarena-gateway-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    # Files left by an earlier run would add its counts to this one's.
    for stale in directory.glob("*.db"):
        stale.unlink()
    return directory


def serve(settings: Settings) -> int:
    """Serves the API on `gateway_host:gateway_port` with `gateway_workers` processes.

    Each process builds its app from the `VLARENA_*` environment, so configure the gateway
    through the environment (or a `.env`-style Secret), not arguments.
    """
    metrics_dir = None
    if settings.gateway_workers > 1:
        metrics_dir = prepare_metrics_dir(settings)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        uvicorn.run(
            "vlarena.gateway.app:create_app",
            factory=True,
            host=settings.gateway_host,
            port=settings.gateway_port,
            workers=settings.gateway_workers,
            access_log=settings.gateway_access_log,
            log_config=logging_config(settings.log_level, settings.log_format),
            proxy_headers=True,
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir is not None and settings.metrics_dir is None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
