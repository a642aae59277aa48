"""Runs a job spec through the ML core as a worker does, for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_job(spec: dict[str, Any], workdir: Path, events: list | None = None) -> dict[str, Any]:
    from vlarena.training.jobs import execute_job

    sink = events.append if events is not None else (lambda _e: None)
    return execute_job(spec, workdir, on_event=sink)
