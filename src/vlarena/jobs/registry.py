"""The model registry: versions that succeeded jobs registered, aliases that point at them, and
who owns each name (`vlarena.jobs.ownership`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis

from vlarena.jobs.keys import RedisKeys, lua_key_functions
from vlarena.jobs.lua import LuaScripts
from vlarena.jobs.ownership import MODEL_ACCESS, Caller, Owner
from vlarena.jobs.records import ModelVersion, RegisteredModel, ms_to_datetime

# ARGV: prefix, the caller's key name, team, admin ('1' or '0'), then model names. Records the
# caller for its jobs' registrations (`caller:{key}`), then returns the index (1-based) of the
# first name the caller may not register under and that name's owner, or {0, ''}.
_ADMIT = (
    "local P = ARGV[1]\n"
    + lua_key_functions()
    + MODEL_ACCESS
    + """
local key, team, admin = ARGV[2], ARGV[3], ARGV[4] == '1'
redis.call('HSET', k_caller(key), 'team', team, 'admin', ARGV[4])
for i = 5, #ARGV do
  local access = model_access(ARGV[i], key, team, admin)
  if access ~= 'ok' and access ~= 'new' then return {i - 4, access} end
end
return {0, ''}
"""
)


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
        self._admit = redis.register_script(_ADMIT)

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
                self._read_model(pipe, name)
            replies = await pipe.execute()
        models = [
            _model(fields, aliases, owner)
            for fields, aliases, owner in zip(
                replies[::3], replies[1::3], replies[2::3], strict=True
            )
            if fields
        ]
        return models, next_cursor

    def _read_model(self, pipe: Any, name: str) -> None:
        pipe.hgetall(self.keys.model(name))
        pipe.hgetall(self.keys.model_aliases(name))
        pipe.hgetall(self.keys.model_owner(name))

    async def get_model(self, name: str) -> RegisteredModel | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            self._read_model(pipe, name)
            fields, aliases, owner = await pipe.execute()
        return _model(fields, aliases, owner) if fields else None

    async def owner(self, name: str) -> Owner | None:
        """Who owns the name; None for a name registered before owners were (the admins')."""
        # The client decodes replies (`decode_responses=True`): the fields are strings.
        fields = cast(dict[str, str], await self.redis.hgetall(self.keys.model_owner(name)))
        return _owner(fields)

    async def admit(self, caller: Caller, names: list[str]) -> tuple[int, str]:
        """Whether `caller` may register versions under each of `names` (a job it submits):
        (0, '') or the 1-based index of a name it may not use and that name's owner (`key:NAME`,
        `team:NAME` or `admins`). Records the caller's team and admin flag, which its jobs'
        registrations read (a name nobody owns yet goes to the first job that registers it)."""
        index, owner = await self._admit(
            args=[self.keys.prefix, caller.key, caller.team, "1" if caller.admin else "0", *names]
        )
        return int(index), str(owner)

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


def _owner(fields: dict[str, str]) -> Owner | None:
    return Owner(fields["key"], fields.get("team", "")) if fields.get("key") else None


def _model(
    fields: dict[str, str], aliases: dict[str, str], owner: dict[str, str]
) -> RegisteredModel:
    found = _owner(owner)
    return RegisteredModel(
        name=fields["name"],
        family=fields["family"],
        latest_version=int(fields["latestVersion"]),
        # A model's hash always holds both times (set by the scripts that register versions).
        created_at=cast(datetime, ms_to_datetime(fields["createdAt"])),
        updated_at=cast(datetime, ms_to_datetime(fields["updatedAt"])),
        aliases={alias: int(v) for alias, v in sorted(aliases.items())},
        owner=found.label if found is not None else None,
    )
