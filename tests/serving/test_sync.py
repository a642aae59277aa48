"""Promotion reaches every Triton replica: each replica's `triton-sync` follows the registry,
including a replica started after the promotion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from vlarena.serving.client import TritonPool
from vlarena.serving.triton import LocalTriton

PROMO = "promo-tvlm"
PARTS = ("vision", "vision.int8", "decoder_memory", "decoder_step", "decoder_score")


async def _until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _ready(pool: TritonPool, name: str, version: int) -> bool:
    results = [await pool.model_ready(f"{name}.{part}", version) for part in PARTS]
    return all(results)


async def _gone(pool: TritonPool, name: str, version: int) -> bool:
    return not any([await pool.model_ready(f"{name}.{part}", version) for part in PARTS])


def test_promotion_reaches_every_replica_even_one_started_later(
    platform, triton, registered, tiny_compare, tmp_path_factory
):
    model_path = next(
        tiny_compare["workdir"] / m["path"]
        for m in tiny_compare["result"]["models"]
        if m["family"] == "token-vlm"
    )
    v1 = platform.register(PROMO, "token-vlm", model_path)
    v2 = platform.register(PROMO, "token-vlm", model_path)
    root = tmp_path_factory.mktemp("triton-b")
    replica_b = LocalTriton(root / "repository", workdir=root)

    async def scenario() -> None:
        stop = asyncio.Event()
        sync_a = platform.sync(triton.repository, triton.grpc_url)
        pool_a, pool_b = TritonPool(triton.grpc_url), TritonPool(replica_b.grpc_url)
        tasks = [asyncio.create_task(sync_a.run(stop))]
        try:
            # An alias set through the registry: replica A's sync hears the event and loads.
            await platform.registry.set_alias(PROMO, "production", v1)
            await _until(lambda: _ready(pool_a, PROMO, v1), 90, "replica A to load v1")

            # Replica B starts after the promotion: its own sync converges by itself, to the
            # promoted version and to the models promoted before it existed.
            await asyncio.get_running_loop().run_in_executor(None, replica_b.start)
            sync_b = platform.sync(replica_b.repository, replica_b.grpc_url)
            tasks.append(asyncio.create_task(sync_b.run(stop)))
            await _until(lambda: _ready(pool_b, PROMO, v1), 120, "replica B to load v1")
            earlier = registered["vl-jepa"]
            await _until(
                lambda: pool_b.model_ready(f"{earlier['name']}.predictor", earlier["version"]),
                60,
                "replica B to load a model promoted before it started",
            )

            # Moving the alias moves every replica to the new version.
            await platform.registry.set_alias(PROMO, "production", v2)
            for pool in (pool_a, pool_b):
                await _until(lambda p=pool: _ready(p, PROMO, v2), 90, "v2 on every replica")
                await _until(lambda p=pool: _gone(p, PROMO, v1), 30, "v1 unloaded")

            # Without an alias nothing of the model is served, or left in the repositories.
            await platform.registry.remove_alias(PROMO, "production")
            for pool in (pool_a, pool_b):
                await _until(lambda p=pool: _gone(p, PROMO, v2), 30, "v2 unloaded")
            for repo in (triton.repository, replica_b.repository):
                assert not any(p.name.startswith(f"{PROMO}.") for p in repo.iterdir())
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pool_a.close()
            await pool_b.close()

    try:
        platform.run(scenario())
    finally:
        replica_b.stop()
