"""API keys: loaded from settings or a mounted Secret, kept only as SHA-256 digests, with scopes."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from enum import StrEnum

import yaml
from pydantic import TypeAdapter

from vlarena.jobs.ownership import Caller, Owner, admits
from vlarena.settings import ApiKeyEntry, Settings


class Scope(StrEnum):
    """read: look at jobs and models; submit: also submit and cancel own jobs; admin: all."""

    READ = "read"
    SUBMIT = "submit"
    ADMIN = "admin"


_GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.READ: frozenset({Scope.READ}),
    Scope.SUBMIT: frozenset({Scope.READ, Scope.SUBMIT}),
    Scope.ADMIN: frozenset(Scope),
}


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the key's name, what it may do and its team ('' for none)."""

    name: str
    scopes: frozenset[Scope]
    team: str = ""

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes

    @property
    def caller(self) -> Caller:
        return Caller(self.name, self.team, self.allows(Scope.ADMIN))

    def may_change(self, owner: Owner | None) -> bool:
        """Whether this key may change what `owner` made (None: the admins')."""
        return admits(owner, self.caller)


ANONYMOUS_ADMIN = Principal("anonymous", frozenset(Scope))


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    """A fresh secret: `vlk_` + 32 random bytes, URL-safe."""
    return "vlk_" + secrets.token_urlsafe(32)


_ENTRIES = TypeAdapter(list[ApiKeyEntry])


def _file_entries(path: str) -> list[ApiKeyEntry]:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) if path.endswith((".yaml", ".yml")) else json.load(f)
    if isinstance(data, dict):
        data = data.get("keys", [])
    return _ENTRIES.validate_python(data)


class ApiKeys:
    """The key table: digest → principal. Secrets given in clear are hashed on load."""

    def __init__(self, entries: list[ApiKeyEntry]) -> None:
        self._by_digest: dict[str, Principal] = {}
        for entry in entries:
            digest = entry.sha256 or key_digest(entry.key or "")
            scopes = frozenset().union(*(_GRANTS[Scope(s)] for s in entry.scopes))
            self._by_digest[digest] = Principal(entry.name, scopes, entry.team or "")

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        entries = list(settings.api_keys)
        if settings.api_keys_file is not None:
            entries += _file_entries(str(settings.api_keys_file))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, token: str) -> Principal | None:
        return self._by_digest.get(key_digest(token))
