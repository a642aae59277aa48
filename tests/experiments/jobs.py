"""Runs a job spec through the ML core as a worker does, for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_job(
    spec: dict[str, Any], workdir: Path, events: list | None = None, *, force: bool = False
) -> dict[str, Any]:
    from vlarena.events import ignore
    from vlarena.experiments.jobs import run_job as run
    from vlarena.jobs.spec import parse_job_spec

    sink = events.append if events is not None else ignore
    return run(parse_job_spec(spec), workdir, on_event=sink, force=force)
