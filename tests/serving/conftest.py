"""Serving fixtures: the tiny compare run's models exported once, a redis-server, the registry
holding them, and one real `tritonserver` that a `triton-sync` pass has loaded them into.

Everything binds 127.0.0.1 on free ports and uses its own key prefix."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vlarena.serving.triton import LocalTriton

TINY_NAMES = {"token-vlm": "tiny-tvlm", "vl-jepa": "tiny-jepa"}


@pytest.fixture(scope="session")
def tiny_exports(tiny_compare: dict[str, Any], tiny_splits) -> dict[str, Any]:
    """{family: ServingManifest} of the tiny compare run's models, which the compare job
    exported beside each family's model.pt."""
    from vlarena.rundirs import RunDir
    from vlarena.serving.manifest import ServingManifest

    out = {}
    for m in tiny_compare["result"]["models"]:
        run = RunDir.of_model(tiny_compare["workdir"] / m["path"])
        out[m["family"]] = ServingManifest.load(run.export)
    return out


@pytest.fixture(scope="session")
def serving_settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory):
    from vlarena.settings import Settings

    return Settings(
        redis_url=redis_url,
        key_prefix=f"serving-test-{uuid.uuid4().hex[:6]}:",
        artifact_dir=tmp_path_factory.mktemp("artifacts"),
        auth_disabled=True,
    )


class Platform:
    """The registry of the test's Redis, driven from synchronous tests."""

    def __init__(self, settings) -> None:
        from vlarena.jobs.lua import LuaScripts
        from vlarena.jobs.registry import ModelRegistry
        from vlarena.jobs.store import JobStore, connect

        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.redis = connect(settings)
        self.store = JobStore(self.redis, settings)
        self.registry = ModelRegistry(
            self.redis, self.store.keys, LuaScripts(self.redis, settings.key_prefix, 1000)
        )

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def register(self, name: str, family: str, model_path: Path) -> int:
        """Registers `model_path` as a new READY version of `name` the way the platform does
        (a train job that succeeds); returns the version number."""
        from vlarena.jobs.spec import JOB_SPEC_ADAPTER
        from vlarena.jobs.store import RegisteredVersion

        spec = JOB_SPEC_ADAPTER.validate_python(
            {
                "type": "train",
                "model": {"family": family},
                "dataset": {"name": "fashion-grid"},
                "budget": {"samples": 1},
            }
        )

        async def go() -> int:
            record, _ = await self.store.create(spec, owner="serving-tests")
            claim = await self.store.claim(record.queue, "serving-tests")
            assert claim is not None and claim.job_id == record.id
            version = RegisteredVersion(name, family, str(model_path), {}, "READY")
            await self.store.finish(claim, "succeeded", models=[version])
            return (await self.registry.get_model(name)).latest_version

        return self.run(go())

    def set_alias(self, name: str, alias: str, version: int) -> None:
        assert self.run(self.registry.set_alias(name, alias, version))

    def remove_alias(self, name: str, alias: str) -> None:
        self.run(self.registry.remove_alias(name, alias))

    def sync(self, repository: Path, triton_url: str):
        from vlarena.serving.repository import ModelRepository
        from vlarena.serving.sync import TritonSync

        return TritonSync(
            ModelRepository(repository, intra_op_threads=1),
            triton_url,
            self.redis,
            self.store.keys,
            self.registry,
            interval_s=1.0,
        )

    def close(self) -> None:
        self.run(self.redis.aclose())
        self.loop.close()


@pytest.fixture(scope="session")
def platform(serving_settings) -> Iterator[Platform]:
    p = Platform(serving_settings)
    yield p
    p.close()


@pytest.fixture(scope="session")
def registered(platform: Platform, tiny_compare: dict[str, Any], tiny_exports) -> dict[str, Any]:
    """Both tiny models registered (version 1) with the alias `production`."""
    out = {}
    for m in tiny_compare["result"]["models"]:
        name = TINY_NAMES[m["family"]]
        version = platform.register(name, m["family"], tiny_compare["workdir"] / m["path"])
        platform.set_alias(name, "production", version)
        out[m["family"]] = {"name": name, "version": version}
    return out


@pytest.fixture(scope="session")
def triton(
    tmp_path_factory: pytest.TempPathFactory, platform: Platform, registered
) -> Iterator[LocalTriton]:
    """Replica A: a real tritonserver whose repository one triton-sync pass filled."""
    root = tmp_path_factory.mktemp("triton-a")
    server = LocalTriton(root / "repository", workdir=root)
    server.start()
    sync = platform.sync(server.repository, server.grpc_url)
    report = platform.run(sync.reconcile())
    platform.run(sync.close())
    assert not report.failed, report.failed
    yield server
    server.stop()
