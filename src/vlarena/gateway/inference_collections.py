"""Retrieval collections in Redis: named sets of embedded texts and images that every gateway
process shares and that outlive any of them.

Keys (under the job platform's prefix, beside `vlarena.jobs.keys`):
- `collections` (sorted set, all scores 0): collection names;
- `collection:{name}` (hash): `name`, `model`, `version`, `family`, `dim`, `createdAt`,
  `updatedAt` (epoch ms), `revision` (bumped on every change), `ownerKey` and `ownerTeam` (the
  key that made it and its team, `vlarena.jobs.ownership`; absent in collections made before
  owners were recorded, which are the admins');
- `collection:{name}:items` (hash): item id → JSON `{kind, metadata, vector}` with the
  L2-normalised float32 vector base64-encoded.

A collection is pinned to the model version that embedded its items: vectors of two versions
do not share a space. Searching reads the items once per revision and keeps the matrix in the
process, so repeated queries cost one HGET of the revision.
"""

from __future__ import annotations

import base64
import builtins
import json
import time
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from vlarena.jobs.ownership import Owner


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model: str
    version: int
    family: str
    dim: int
    items: int
    created_at_ms: int
    updated_at_ms: int
    owner: Owner | None


@dataclass
class _Matrix:
    revision: int
    ids: list[str]
    kinds: list[str]
    metadata: list[dict[str, Any]]
    vectors: np.ndarray  # (N, D)


class CollectionStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._cache: dict[str, _Matrix] = {}

    def _names(self) -> str:
        return f"{self.prefix}collections"

    def _meta(self, name: str) -> str:
        return f"{self.prefix}collection:{name}"

    def _items(self, name: str) -> str:
        return f"{self.prefix}collection:{name}:items"

    async def create(
        self, name: str, model: str, version: int, family: str, owner: Owner
    ) -> CollectionInfo | None:
        """A new empty collection of `owner`; None when the name is taken."""
        now = int(time.time() * 1000)
        # Typed as redis-py's hash mapping: its `Mapping` key is invariant, so `dict[str, ...]` fails.
        fields: dict[FieldT, EncodableT] = {
            "name": name,
            "model": model,
            "version": version,
            "family": family,
            "dim": 0,
            "createdAt": now,
            "updatedAt": now,
            "revision": 0,
            "ownerKey": owner.key,
            "ownerTeam": owner.team,
        }
        if not await self.redis.hsetnx(self._meta(name), "name", name):
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._meta(name), mapping=fields)
            pipe.zadd(self._names(), {name: 0})
            await pipe.execute()
        return await self.get(name)

    async def get(self, name: str) -> CollectionInfo | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._meta(name))
            pipe.hlen(self._items(name))
            fields, count = await pipe.execute()
        if not fields or "model" not in fields:
            return None
        return CollectionInfo(
            name=fields["name"],
            model=fields["model"],
            version=int(fields["version"]),
            family=fields["family"],
            dim=int(fields["dim"]),
            items=int(count),
            created_at_ms=int(fields["createdAt"]),
            updated_at_ms=int(fields["updatedAt"]),
            owner=Owner(fields["ownerKey"], fields.get("ownerTeam", ""))
            if fields.get("ownerKey")
            else None,
        )

    async def list(self) -> list[CollectionInfo]:
        # The client decodes replies (`decode_responses=True`): the names are strings.
        names = cast(builtins.list[str], await self.redis.zrange(self._names(), 0, -1))
        found = [await self.get(n) for n in names]
        return [c for c in found if c is not None]

    async def delete(self, name: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._meta(name), self._items(name))
            pipe.zrem(self._names(), name)
            removed, _ = await pipe.execute()
        self._cache.pop(name, None)
        return bool(removed)

    async def add(
        self,
        name: str,
        ids: builtins.list[str],
        kinds: builtins.list[str],
        metadata: builtins.list[dict[str, Any]],
        vectors: np.ndarray,
    ) -> int:
        """Adds or replaces items; returns how many were new."""
        vectors = vectors.astype(np.float32)
        payload: dict[FieldT, EncodableT] = {
            item_id: json.dumps(
                {"kind": kind, "metadata": meta, "vector": base64.b64encode(vec.tobytes()).decode()}
            )
            for item_id, kind, meta, vec in zip(ids, kinds, metadata, vectors, strict=True)
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hlen(self._items(name))
            pipe.hset(self._items(name), mapping=payload)
            pipe.hset(
                self._meta(name),
                mapping={"dim": vectors.shape[1], "updatedAt": int(time.time() * 1000)},
            )
            pipe.hincrby(self._meta(name), "revision", 1)
            _, added, *_ = await pipe.execute()
        return int(added)

    async def _matrix(self, name: str) -> _Matrix:
        revision = int(await self.redis.hget(self._meta(name), "revision") or 0)
        cached = self._cache.get(name)
        if cached is not None and cached.revision == revision:
            return cached
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(self._meta(name), "revision")
            pipe.hgetall(self._items(name))
            revision_now, raw = await pipe.execute()
        ids, kinds, metas, vecs = [], [], [], []
        for item_id, blob in sorted(raw.items()):
            item = json.loads(blob)
            ids.append(item_id)
            kinds.append(item["kind"])
            metas.append(item["metadata"])
            vecs.append(np.frombuffer(base64.b64decode(item["vector"]), dtype=np.float32))
        matrix = _Matrix(
            int(revision_now or 0),
            ids,
            kinds,
            metas,
            np.stack(vecs) if vecs else np.zeros((0, 0), np.float32),
        )
        self._cache[name] = matrix
        return matrix

    async def search(
        self, name: str, query: np.ndarray, k: int, kind: str | None = None
    ) -> builtins.list[tuple[str, str, float, dict[str, Any]]]:
        """The `k` items most similar (cosine) to the normalised `query` (D,), best first."""
        m = await self._matrix(name)
        if not m.ids:
            return []
        scores = m.vectors @ query.astype(np.float32)
        if kind is not None:
            scores = np.where(np.array(m.kinds) == kind, scores, -np.inf)
        order = np.argsort(-scores, kind="stable")[:k]
        return [
            (m.ids[i], m.kinds[i], float(scores[i]), m.metadata[i])
            for i in order
            if np.isfinite(scores[i])
        ]
