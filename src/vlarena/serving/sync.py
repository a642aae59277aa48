"""`vlarena triton-sync`: the reconciler beside each Triton replica.

An explicit load through a Service reaches one replica, and a replica the autoscaler starts
later knows nothing of earlier loads. So each replica has its own reconciler that derives what
to serve from the registry alone: every READY version that carries an alias. It copies those
versions' graphs into its replica's repository, writes each Triton model's config with a
`specific` version policy, and loads or unloads through the repository API. It reconciles at
start (a new replica converges by itself), on every registry event (an alias set or removed)
and every `interval` seconds (Triton restarted, a missed event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import tritonclient.grpc.aio as grpcclient
from redis.asyncio import Redis
from tritonclient.utils import InferenceServerException

from vlarena.jobs.keys import RedisKeys
from vlarena.jobs.registry import ModelRegistry
from vlarena.rundirs import RunDir
from vlarena.serving.manifest import ServingManifest, triton_model_name
from vlarena.serving.repository import Batching, ModelRepository, TensorSpec

log = logging.getLogger(__name__)

# The client decodes replies (`decode_responses=True`) and speaks RESP2, so a stream entry is an
# (id, fields) pair of strings; redis-py types replies for every protocol and decoding mode.
_StreamEntries = list[tuple[str, dict[str, str]]]


@dataclass
class DesiredModel:
    """One Triton model as the registry wants it: its I/O, batching and version → graph file."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batching: Batching
    files: dict[int, Path] = field(default_factory=dict)


def _widen(a: tuple[TensorSpec, ...], b: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """Specs both versions fit: a dim the versions disagree on becomes variable (-1)."""
    out = []
    for x, y in zip(a, b, strict=True):
        dims = tuple(d if d == e else -1 for d, e in zip(x.dims, y.dims, strict=True))
        out.append(TensorSpec(x.name, x.data_type, dims))
    return tuple(out)


def plan(served: dict[str, dict[int, ServingManifest]]) -> dict[str, DesiredModel]:
    """Triton models, with their versions' graphs, for {model name: {version: manifest}}."""
    desired: dict[str, DesiredModel] = {}
    for name, versions in served.items():
        for version, manifest in sorted(versions.items()):
            for part in manifest.parts.values():
                for precision in ("fp32", *part.variants):
                    triton_name = triton_model_name(name, part.name, precision)
                    entry = desired.get(triton_name)
                    if entry is None:
                        entry = desired[triton_name] = DesiredModel(
                            part.inputs, part.outputs, part.batching
                        )
                    elif (
                        len(entry.inputs) == len(part.inputs)
                        and len(entry.outputs) == len(part.outputs)
                        and all(
                            len(x.dims) == len(y.dims)
                            for x, y in zip(
                                entry.inputs + entry.outputs,
                                part.inputs + part.outputs,
                                strict=True,
                            )
                        )
                    ):
                        entry.inputs = _widen(entry.inputs, part.inputs)
                        entry.outputs = _widen(entry.outputs, part.outputs)
                    else:
                        log.warning(
                            "%s v%d: its %s graph does not fit the other versions'; skipped",
                            name,
                            version,
                            part.name,
                        )
                        continue
                    entry.files[version] = manifest.path_of(part.name, precision)
    return desired


def write_plan(repo: ModelRepository, desired: dict[str, DesiredModel]) -> set[str]:
    """Brings the repository's files and configs of the `desired` models up to date (others
    are left alone); returns the models whose versions or config changed."""
    changed = set()
    for name, want in desired.items():
        dirty = False
        for version, graph in want.files.items():
            dirty |= repo.add_version(name, version, graph)
        for version in repo.versions(name):
            if version not in want.files:
                repo.remove_version(name, version)
                dirty = True
        versions = tuple(sorted(want.files))
        config = repo.config(name, want.inputs, want.outputs, want.batching, versions)
        dirty |= repo.write_config(config)
        if dirty:
            changed.add(name)
    return changed


@dataclass
class SyncReport:
    loaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # "name vN" → why

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)}, unloaded {len(self.unloaded)}, "
            f"failed {len(self.failed)}, skipped {len(self.skipped)}"
        )


class TritonSync:
    """Reconciles one Triton replica's repository and loaded models with the registry."""

    def __init__(
        self,
        repository: ModelRepository,
        triton_url: str,
        redis: Redis,
        keys: RedisKeys,
        registry: ModelRegistry,
        *,
        interval_s: float = 30.0,
    ) -> None:
        self.repository = repository
        self.triton_url = triton_url
        self.redis = redis
        self.keys = keys
        self.registry = registry
        self.interval_s = interval_s
        self._triton: grpcclient.InferenceServerClient | None = None

    @property
    def triton(self) -> grpcclient.InferenceServerClient:
        if self._triton is None:
            self._triton = grpcclient.InferenceServerClient(self.triton_url)
        return self._triton

    async def served_versions(self, report: SyncReport) -> dict[str, dict[int, ServingManifest]]:
        """{model: {version: manifest}} of every READY version that carries an alias."""
        served: dict[str, dict[int, ServingManifest]] = {}
        cursor = None
        while True:
            models, cursor = await self.registry.list_models(limit=200, cursor=cursor)
            for model in models:
                for version in sorted(set(model.aliases.values())):
                    record = await self.registry.version(model.name, version)
                    key = f"{model.name} v{version}"
                    if record is None or record.status != "READY":
                        report.skipped[key] = "not READY"
                        continue
                    try:
                        manifest = ServingManifest.load(RunDir.of_model(record.path).export)
                    except (OSError, ValueError) as exc:
                        report.skipped[key] = f"no serving export: {exc}"
                        continue
                    served.setdefault(model.name, {})[version] = manifest
            if cursor is None:
                return served

    async def _ready(self, name: str, versions: list[int]) -> bool:
        try:
            for v in versions:
                if not await self.triton.is_model_ready(name, str(v)):
                    return False
        except InferenceServerException:
            return False
        return True

    async def reconcile(self) -> SyncReport:
        """One pass: copy and load what should be served, unload and delete the rest."""
        report = SyncReport()
        desired = plan(await self.served_versions(report))
        repo = self.repository
        changed = write_plan(repo, desired)
        to_load = [
            name
            for name, want in desired.items()
            if name in changed or not await self._ready(name, sorted(want.files))
        ]
        # Triton loads models in parallel; each python-backend model starts its own process.
        results = await asyncio.gather(
            *(self.triton.load_model(name) for name in to_load), return_exceptions=True
        )
        for name, result in zip(to_load, results, strict=True):
            if isinstance(result, InferenceServerException):
                report.failed[name] = result.message() or str(result)
                log.error("loading %s failed: %s", name, report.failed[name])
            elif isinstance(result, BaseException):
                raise result
            else:
                report.loaded.append(name)
        for name in repo.models():
            if name in desired:
                continue
            with contextlib.suppress(InferenceServerException):
                await self.triton.unload_model(name)
            repo.remove_model(name)
            report.unloaded.append(name)
        if report.loaded or report.unloaded or report.failed:
            log.info("triton-sync: %s", report.summary())
        return report

    async def _last_event_id(self) -> str:
        last = cast(
            _StreamEntries, await self.redis.xrevrange(self.keys.registry_events(), count=1)
        )
        return last[0][0] if last else "0-0"

    async def run(self, stop: asyncio.Event) -> None:
        """Reconciles until `stop` is set: at start, on registry events, every interval.
        Failures (Redis or Triton not up yet) are logged and retried at the next wake-up."""
        last_id = "0-0"
        pending = True
        while not stop.is_set():
            try:
                if pending:
                    last_id = await self._last_event_id()
                    await self.reconcile()
                    pending = False
                block_ms = int(self.interval_s * 1000)
                reply = cast(
                    list[tuple[str, _StreamEntries]],
                    await self.redis.xread(
                        {self.keys.registry_events(): last_id}, count=100, block=block_ms
                    ),
                )
                if reply:
                    last_id = reply[0][1][-1][0]
                pending = True  # an event, or the interval: reconcile again
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("triton-sync pass failed; retrying")
                pending = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(self.interval_s, 2.0))

    async def close(self) -> None:
        if self._triton is not None:
            await self._triton.close()
            self._triton = None
