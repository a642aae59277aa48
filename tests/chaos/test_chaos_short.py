"""The chaos suite's short run, part of `make test`: 4 tiny train jobs on 2 workers (more, up to
12, where they would all end before the faults happened) under 6 SIGKILLs of workers, a kill -9
of Redis (restarted on its AOF) and a worker SIGSTOPped past its lease; every job must succeed
exactly once with intact artifacts. Under 3 minutes on 2 cores."""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_harness import Scenario, run_scenario

SHORT = Scenario(
    name="short",
    jobs=4,
    kills=6,
    workers=2,
    max_retries=6,
    kill_cap=3,
    redis_kill=True,
    worker_stall=True,
    lease_seconds=4.0,
    samples=1920,
    deadline_s=150.0,
    max_jobs=12,
)


@pytest.mark.slow
def test_short_chaos_run_loses_nothing(chaos_root: Path, chaos_lines: list[str]) -> None:
    report = run_scenario(SHORT, chaos_root)
    chaos_lines.append(report.line)
    assert report.ok, f"{report.details()}\n{report.line}\nlogs: {chaos_root / 'logs'}"
