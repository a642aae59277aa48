"""A registry holding a model the gateway can serve without Triton: a finished train job whose
run has the serving manifest of a real tiny export (the graphs stay with Triton, which no test
here runs), registered and aliased `production` as a worker and an admin would."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from vlarena.jobs.lua import LuaScripts
from vlarena.jobs.registry import ModelRegistry
from vlarena.jobs.store import JobStore, RegisteredVersion, connect
from vlarena.settings import Settings

EXPORTS = Path(__file__).parent / "exports"


def job_workdir(root: Path) -> Path:
    """A finished job's directory: metrics, a model file and its serving export, a report."""
    workdir = root / "job"
    export = workdir / "vl-jepa" / "export"
    export.mkdir(parents=True)
    shutil.copyfile(EXPORTS / "vl-jepa.serving.json", export / "serving.json")
    (workdir / "vl-jepa" / "model.pt").write_bytes(b"not read by the gateway")
    (workdir / "metrics.json").write_text(json.dumps({"schema": "vlarena.metrics/v4"}))
    (workdir / "report").mkdir()
    (workdir / "report" / "report.html").write_text("<!DOCTYPE html><title>report</title>")
    return workdir


def finish_next_job(settings: Settings, workdir: Path, model: str) -> None:
    """Runs the oldest queued job to success as a worker would, registering version 1 of
    `model` from `workdir`, then points `production` at it."""

    async def go() -> None:
        redis = connect(settings)
        try:
            store = JobStore(redis, settings)
            claim = await store.claim("cpu", "test-worker")
            assert claim is not None
            await store.write(claim, fields={"workdir": str(workdir)})
            path = str(workdir / "vl-jepa" / "model.pt")
            version = RegisteredVersion(model, "vl-jepa", path, {"accuracy": 0.5}, "READY")
            await store.finish(
                claim,
                "succeeded",
                result={"artifacts": ["metrics.json", "vl-jepa/model.pt"]},
                metrics={"accuracy": 0.5},
                models=[version],
            )
            registry = ModelRegistry(
                redis, store.keys, LuaScripts(redis, settings.key_prefix, 1000)
            )
            assert await registry.set_alias(model, "production", 1)
        finally:
            await redis.aclose()

    asyncio.run(go())
