"""The chaos suite's full runs (`make chaos`; skipped in `make test`).

1. 20 tiny train jobs on 3 workers (more, up to 40, where they would all end before the faults
   happened) under at least 100 SIGKILLs of workers (no job killed more
   often than its retries allow), a kill -9 of Redis restarted on its AOF, a worker SIGSTOPped past
   its lease then resumed, and a Triton kill during inference; within 30 minutes.
2. Jobs with maxRetries 0 through a Redis stall (SIGSTOP of redis-server) at a job's final write,
   longer than the workers' and the gateway's call timeouts (30 s) but within the lease: every
   job must still end SUCCEEDED.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_harness import Scenario, run_scenario

FULL = Scenario(
    name="full",
    jobs=20,
    kills=100,
    workers=3,
    max_retries=10,
    kill_cap=7,
    redis_kill=True,
    worker_stall=True,
    triton_kill=True,
    lease_seconds=4.0,
    samples=6400,
    deadline_s=25 * 60.0,
    max_jobs=40,
)

REDIS_STALL = Scenario(
    name="redis-stall",
    jobs=3,
    kills=0,
    workers=2,
    max_retries=0,
    kill_cap=0,
    redis_kill=False,
    worker_stall=False,
    redis_stall_s=35.0,
    lease_seconds=60.0,
    samples=640,
    deadline_s=300.0,
)


@pytest.mark.chaos
def test_full_chaos_run_loses_nothing(chaos_root: Path, chaos_lines: list[str]) -> None:
    report = run_scenario(FULL, chaos_root)
    chaos_lines.append(report.line)
    assert report.wall_s <= 30 * 60, f"the full run took {report.wall_s:.0f} s"
    assert report.ok, f"{report.details()}\n{report.line}\nlogs: {chaos_root / 'logs'}"


@pytest.mark.chaos
def test_redis_stall_at_the_final_write_spends_no_retry(
    chaos_root: Path, chaos_lines: list[str]
) -> None:
    report = run_scenario(REDIS_STALL, chaos_root)
    chaos_lines.append(report.line)
    assert report.ok, f"{report.details()}\n{report.line}\nlogs: {chaos_root / 'logs'}"
