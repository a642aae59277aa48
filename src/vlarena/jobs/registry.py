"""The model registry: versions that succeeded jobs registered, and aliases that point at them."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from redis.asyncio import Redis

from vlarena.jobs.keys import RedisKeys
from vlarena.jobs.lua import LuaScripts
from vlarena.jobs.records import ModelVersion, RegisteredModel, ms_to_datetime


class VersionNotReady(Exception):
    """Only READY versions may carry an alias."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class ModelRegistry:
    """Reads models and versions; sets and removes aliases (versions come from job success)."""

    def __init__(self, redis: Redis, keys: RedisKeys, scripts: LuaScripts) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts

    async def list_models(
        self, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[RegisteredModel], str | None]:
        """Models by name, `limit` at a time; pass the returned cursor for the next page."""
        lower = f"({cursor}" if cursor else "-"
        # The client decodes replies (`decode_responses=True`): the names are strings.
        names = cast(
            list[str],
            await self.redis.zrangebylex(self.keys.models(), lower, "+", start=0, num=limit + 1),
        )
        next_cursor = names[limit - 1] if len(names) > limit else None
        names = names[:limit]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.model(name))
                pipe.hgetall(self.keys.model_aliases(name))
            replies = await pipe.execute()
        models = [
            _model(fields, aliases)
            for fields, aliases in zip(replies[::2], replies[1::2], strict=True)
            if fields
        ]
        return models, next_cursor

    async def get_model(self, name: str) -> RegisteredModel | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.model(name))
            pipe.hgetall(self.keys.model_aliases(name))
            fields, aliases = await pipe.execute()
        return _model(fields, aliases) if fields else None

    async def versions(self, name: str) -> list[ModelVersion]:
        """Every version of `name`, newest first (empty for an unknown model)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.model_versions(name))
            pipe.hgetall(self.keys.model_aliases(name))
            versions, aliases = await pipe.execute()
        by_version: dict[int, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(int(version), []).append(alias)
        records = [
            ModelVersion.from_json(raw, sorted(by_version.get(int(v), [])))
            for v, raw in versions.items()
        ]
        return sorted(records, key=lambda r: r.version, reverse=True)

    async def version(self, name: str, version: int) -> ModelVersion | None:
        for record in await self.versions(name):
            if record.version == version:
                return record
        return None

    async def resolve(
        self, name: str, *, version: int | None = None, alias: str | None = None
    ) -> ModelVersion | None:
        """A version by number, by alias, or the newest READY one."""
        records = await self.versions(name)
        if version is not None:
            return next((r for r in records if r.version == version), None)
        if alias is not None:
            return next((r for r in records if alias in r.aliases), None)
        return next((r for r in records if r.status == "READY"), None)

    async def set_alias(self, name: str, alias: str, version: int) -> bool:
        """Points `alias` at `version`; False when the model or version is unknown."""
        status = await self.scripts("set_alias", name, alias, str(version))
        if status is None:
            return False
        if status != "READY":
            raise VersionNotReady(status)
        return True

    async def remove_alias(self, name: str, alias: str) -> bool:
        return bool(await self.scripts("set_alias", name, alias, ""))


def _model(fields: dict[str, str], aliases: dict[str, str]) -> RegisteredModel:
    return RegisteredModel(
        name=fields["name"],
        family=fields["family"],
        latest_version=int(fields["latestVersion"]),
        # A model's hash always holds both times (set by the scripts that register versions).
        created_at=cast(datetime, ms_to_datetime(fields["createdAt"])),
        updated_at=cast(datetime, ms_to_datetime(fields["updatedAt"])),
        aliases={alias: int(v) for alias, v in sorted(aliases.items())},
    )
