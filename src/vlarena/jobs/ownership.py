"""Who owns a model name or a collection: the API key that made it, or that key's team. Admin
keys change anything. Records made before owners were recorded have none and are the admins'.

A model name is owned by the key of the job that registered its first version. The one rule,
in Python for the gateway (`Owner.admits`) and in Lua (`MODEL_ACCESS`) for the scripts that
check a job's names when it is submitted and again when it registers its versions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from vlarena.jobs.spec import AnyJobSpec, CompareJobSpec, ModelFamily, TrainJobSpec


@dataclass(frozen=True)
class Caller:
    """An API key as ownership sees it: its name, its team ('' for none), whether it is admin."""

    key: str
    team: str = ""
    admin: bool = False


@dataclass(frozen=True)
class Owner:
    """The key that made a record and its team then ('' for none)."""

    key: str
    team: str = ""

    @classmethod
    def of(cls, caller: Caller) -> Owner:
        return cls(caller.key, caller.team)

    def admits(self, caller: Caller) -> bool:
        """The making key, a key of its team, or an admin key may change the record."""
        return (
            caller.admin or caller.key == self.key or bool(self.team and caller.team == self.team)
        )

    @property
    def label(self) -> str:
        """How the API shows it: `team:NAME` when it has a team, else `key:NAME`."""
        return f"team:{self.team}" if self.team else f"key:{self.key}"


def admits(owner: Owner | None, caller: Caller) -> bool:
    """Whether `caller` may change a record of `owner` (None: made before owners, admins')."""
    return caller.admin if owner is None else owner.admits(caller)


def owner_label(owner: Owner | None) -> str:
    return owner.label if owner is not None else "admins"


def default_model_name(family: str, dataset: str) -> str:
    """The name a job registers a family's model under when it names none (the experiments'
    `run_job` names it so: `<family>-<dataset name>`)."""
    return f"{family}-{dataset}"


def registered_names(spec: AnyJobSpec) -> list[tuple[str, str]]:
    """(field, model name) for each model the job will register that is known before it runs.
    A manifest's dataset name is read only when the job runs: such names are checked when the
    version is registered."""
    if isinstance(spec, TrainJobSpec):
        if spec.model_name is not None:
            return [("modelName", spec.model_name)]
        if spec.dataset.name is not None:
            return [("modelName", default_model_name(spec.model.family, spec.dataset.name))]
    if isinstance(spec, CompareJobSpec) and spec.dataset.name is not None:
        families = spec.families or list(get_args(ModelFamily))
        return [("dataset.name", default_model_name(f, spec.dataset.name)) for f in families]
    return []


# Lua (after the key builders of `vlarena.jobs.keys`): whether a caller (key name, team, admin
# flag) may register under model `name`. 'ok'; 'new' for a name nobody registered yet (the
# first version registered makes its job's key the owner); else who owns it. Mirrors `admits`.
MODEL_ACCESS = """
local function model_access(name, key, team, admin)
  local owner_key, owner_team = unpack(redis.call('HMGET', k_model_owner(name), 'key', 'team'))
  if not owner_key then
    if redis.call('EXISTS', k_model(name)) == 0 then return 'new' end
    if admin then return 'ok' end
    return 'admins'
  end
  if admin or owner_key == key or (owner_team ~= '' and owner_team == team) then return 'ok' end
  if owner_team ~= '' then return 'team:' .. owner_team end
  return 'key:' .. owner_key
end

local function own_model(name, key, team, now)
  redis.call('HSET', k_model_owner(name), 'key', key, 'team', team, 'createdAt', now)
end
"""
