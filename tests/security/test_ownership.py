"""Ownership: a collection and a model name belong to the API key that made them, or to that
key's team; admin keys change anything; reads stay open to every `read` key. Records made
before owners were recorded are the admins'."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from vlarena.gateway.app import create_app
from vlarena.gateway.inference_collections import CollectionStore
from vlarena.gateway.inference_service import InferenceService
from vlarena.jobs.lua import LuaScripts
from vlarena.jobs.ownership import Owner, registered_names
from vlarena.jobs.registry import ModelRegistry
from vlarena.jobs.spec import JOB_SPEC_ADAPTER
from vlarena.jobs.store import JobStore, RegisteredVersion, connect
from vlarena.settings import Settings

KEYS = {
    "alice": ("alice-secret-key-0001", ["submit"], "ml"),
    "carol": ("carol-secret-key-0003", ["submit"], "ml"),
    "bob": ("bob-secret-key-000002", ["submit"], None),
    "root": ("root-secret-key-00004", ["admin"], None),
}


def as_(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who][0]}"}


def train(model_name: str | None = None, family: str = "vl-jepa", **extra: Any) -> dict:
    spec = {
        "type": "train",
        "model": {"family": family, "config": {"preset": "tiny"}},
        "dataset": {"name": "emoji"},
        "budget": {"samples": 64},
    }
    if model_name is not None:
        spec["modelName"] = model_name
    return spec | extra


def forbidden(response: Any) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    return error


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    (tmp_path / "artifacts").mkdir()
    return Settings(
        redis_url=redis_url,
        key_prefix=f"owners-{uuid.uuid4().hex[:8]}:",
        artifact_dir=tmp_path / "artifacts",
        api_keys=[
            {"name": name, "key": key, "scopes": scopes, "team": team}  # type: ignore[list-item]
            for name, (key, scopes, team) in KEYS.items()
        ],
    )


class Backend:
    """The test's own view of the platform's Redis: runs jobs the way a worker ends them."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.redis = connect(settings)
        self.store = JobStore(self.redis, settings)
        self.registry = ModelRegistry(
            self.redis, self.store.keys, LuaScripts(self.redis, settings.key_prefix, 1000)
        )
        self.collections = CollectionStore(self.redis, settings.key_prefix)

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def succeed_next(self, *names: str, family: str = "vl-jepa") -> str:
        """Runs the oldest queued job to success, registering a READY version of each name."""

        async def go() -> str:
            claim = await self.store.claim("cpu", "owner-tests")
            assert claim is not None
            versions = [
                RegisteredVersion(n, family, "/nowhere/model.pt", {}, "READY") for n in names
            ]
            await self.store.finish(claim, "succeeded", models=versions)
            return claim.job_id

        return self.run(go())

    def create_job(self, owner: str) -> None:
        """A job queued without the gateway (as before owners were recorded)."""
        spec = JOB_SPEC_ADAPTER.validate_python(train())
        self.run(self.store.create(spec, owner=owner))

    def close(self) -> None:
        self.run(self.redis.aclose())
        self.loop.close()


@pytest.fixture
def backend(settings: Settings) -> Iterator[Backend]:
    b = Backend(settings)
    yield b
    b.close()


@pytest.fixture
def api(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    # The registered versions have no serving export; collections only check that one exists.
    monkeypatch.setattr(InferenceService, "manifest", lambda self, record: None)
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_model_name_belongs_to_the_key_or_team_that_registered_it_first(api, backend) -> None:
    # Until a version is registered, nobody owns the name: the first job to register takes it.
    assert api.post("/v1/jobs", json=train("shared"), headers=as_("alice")).status_code == 201
    assert api.post("/v1/jobs", json=train("shared"), headers=as_("bob")).status_code == 201
    backend.succeed_next("shared")
    for spec in (train("shared"), train("shared", validateOnly=True)):
        error = forbidden(api.post("/v1/jobs", json=spec, headers=as_("bob")))
        assert error["details"][0]["field"] == "modelName"
        assert "belongs to team:ml" in error["message"]
    # Its team and admin keys may register versions of it too.
    assert api.post("/v1/jobs", json=train("shared"), headers=as_("carol")).status_code == 201
    assert api.post("/v1/jobs", json=train("shared"), headers=as_("root")).status_code == 201
    # A default name (<family>-<dataset>) is checked too, and a compare job's, per family.
    assert api.post("/v1/jobs", json=train(), headers=as_("bob")).status_code == 201
    backend.succeed_next("shared")  # bob's first job: refused at registration (below)
    backend.succeed_next("shared")  # carol's
    backend.succeed_next("shared")  # root's
    backend.succeed_next("vl-jepa-emoji")  # bob's default name
    compare = {
        "type": "compare",
        "dataset": {"name": "emoji"},
        "budget": {"samples": 64},
        "families": ["token-vlm", "vl-jepa"],
    }
    error = forbidden(api.post("/v1/jobs", json=compare, headers=as_("alice")))
    assert error["details"][0]["field"] == "dataset.name"
    assert "'vl-jepa-emoji' belongs to key:bob" in error["message"]
    model = api.get("/v1/models/shared", headers=as_("bob")).json()
    assert model["owner"] == "team:ml" and model["latestVersion"] == 3


def test_a_version_under_a_name_another_key_owns_is_not_registered(api, backend) -> None:
    assert api.post("/v1/jobs", json=train("mine"), headers=as_("alice")).status_code == 201
    backend.succeed_next("mine")
    # A job whose name the gateway could not know (a manifest's dataset name), or queued
    # before owners were recorded: the check runs again when the version is registered.
    backend.create_job(owner="bob")
    bobs = backend.succeed_next("mine", "bobs-own")
    events = api.get(f"/v1/jobs/{bobs}/events", headers=as_("bob")).json()["items"]
    refused = [e for e in events if e["reason"] == "ModelNotRegistered"]
    assert len(refused) == 1 and "mine belongs to team:ml" in refused[0]["message"]
    assert api.get(f"/v1/jobs/{bobs}", headers=as_("bob")).json()["state"] == "SUCCEEDED"
    assert api.get("/v1/models/mine", headers=as_("bob")).json()["latestVersion"] == 1
    # A new name is taken by the job's key at registration.
    assert api.get("/v1/models/bobs-own", headers=as_("alice")).json()["owner"] == "key:bob"
    forbidden(api.post("/v1/jobs", json=train("bobs-own"), headers=as_("alice")))
    # The team's other key registers (the gateway recorded its team when it submitted).
    assert api.post("/v1/jobs", json=train("mine"), headers=as_("carol")).status_code == 201
    backend.succeed_next("mine")
    assert api.get("/v1/models/mine", headers=as_("bob")).json()["latestVersion"] == 2


def test_aliases_are_set_by_the_model_s_owner_or_an_admin(api, backend) -> None:
    assert api.post("/v1/jobs", json=train("promoted"), headers=as_("alice")).status_code == 201
    backend.succeed_next("promoted")
    alias = {"alias": "production", "version": 1}
    forbidden(api.post("/v1/models/promoted/aliases", json=alias, headers=as_("bob")))
    forbidden(api.delete("/v1/models/promoted/aliases/production", headers=as_("bob")))
    reply = api.post("/v1/models/promoted/aliases", json=alias, headers=as_("carol"))
    assert reply.status_code == 200, reply.text
    assert reply.json()["aliases"] == {"production": 1}
    assert (
        api.delete("/v1/models/promoted/aliases/production", headers=as_("alice")).status_code
        == 204
    )
    assert (
        api.post("/v1/models/promoted/aliases", json=alias, headers=as_("root")).status_code == 200
    )
    # An unknown model is 404 whoever asks.
    reply = api.post("/v1/models/nobody/aliases", json=alias, headers=as_("bob"))
    assert reply.status_code == 404


def test_a_model_registered_before_owners_were_recorded_is_the_admins(
    api, backend, settings
) -> None:
    backend.create_job(owner="bob")
    backend.succeed_next("legacy")
    backend.run(backend.redis.delete(backend.store.keys.model_owner("legacy")))
    assert api.get("/v1/models/legacy", headers=as_("bob")).json()["owner"] is None
    alias = {"alias": "production", "version": 1}
    error = forbidden(api.post("/v1/models/legacy/aliases", json=alias, headers=as_("bob")))
    assert "belongs to admins" in error["message"]
    forbidden(api.post("/v1/jobs", json=train("legacy"), headers=as_("bob")))
    assert api.post("/v1/models/legacy/aliases", json=alias, headers=as_("root")).status_code == 200
    assert api.post("/v1/jobs", json=train("legacy"), headers=as_("root")).status_code == 201


def test_a_collection_belongs_to_its_key_or_team_and_admins_override(api, backend) -> None:
    assert api.post("/v1/jobs", json=train("embedder"), headers=as_("bob")).status_code == 201
    backend.succeed_next("embedder")
    create = {"name": "catalogue", "model": "embedder", "version": 1}
    made = api.post("/v1/collections", json=create, headers=as_("alice"))
    assert made.status_code == 201, made.text
    assert made.json()["owner"] == "team:ml"
    items = {"items": [{"id": "a", "text": "a red bag"}]}
    error = forbidden(api.post("/v1/collections/catalogue/items", json=items, headers=as_("bob")))
    assert "collection 'catalogue' belongs to team:ml" in error["message"]
    forbidden(api.delete("/v1/collections/catalogue", headers=as_("bob")))
    # Reads stay open; the team's other key passes the owner check (then needs a served model).
    assert api.get("/v1/collections/catalogue", headers=as_("bob")).json()["owner"] == "team:ml"
    assert [c["name"] for c in api.get("/v1/collections", headers=as_("bob")).json()["items"]] == [
        "catalogue"
    ]
    reply = api.post("/v1/collections/catalogue/items", json=items, headers=as_("carol"))
    assert reply.status_code == 409 and "no alias" in reply.json()["error"]["message"]
    assert api.delete("/v1/collections/catalogue", headers=as_("root")).status_code == 204
    # Made by a key without a team: that key's; and a collection from before owners: admins'.
    bobs = api.post("/v1/collections", json=create | {"name": "bobs"}, headers=as_("bob"))
    assert bobs.json()["owner"] == "key:bob"
    forbidden(api.delete("/v1/collections/bobs", headers=as_("alice")))
    assert api.delete("/v1/collections/bobs", headers=as_("bob")).status_code == 204
    backend.run(backend.collections.create("old", "embedder", 1, "vl-jepa", Owner("x")))
    meta = backend.collections._meta("old")
    backend.run(backend.redis.hdel(meta, "ownerKey", "ownerTeam"))
    assert api.get("/v1/collections/old", headers=as_("bob")).json()["owner"] is None
    assert (
        "belongs to admins"
        in forbidden(api.delete("/v1/collections/old", headers=as_("alice")))["message"]
    )
    assert api.delete("/v1/collections/old", headers=as_("root")).status_code == 204
    assert api.delete("/v1/collections/old", headers=as_("root")).status_code == 404


def test_the_names_checked_at_submission_are_those_a_job_registers(tiny_compare) -> None:
    spec = JOB_SPEC_ADAPTER.validate_python(
        {"type": "compare", "dataset": {"name": "fashion-grid"}, "budget": {"samples": 64}}
    )
    registered = sorted(m["name"] for m in tiny_compare["result"]["models"])
    assert sorted(name for _, name in registered_names(spec)) == registered
