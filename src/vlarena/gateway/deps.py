"""What routes depend on: the stores, the dispatcher and the caller's identity (API key auth)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer, SecurityScopes

from vlarena.gateway.auth import ANONYMOUS_ADMIN, ApiKeys, Principal, Scope
from vlarena.gateway.documents import JobDocuments
from vlarena.gateway.errors import ApiError
from vlarena.jobs.confinement import Confinement
from vlarena.jobs.dispatch import JobDispatcher
from vlarena.jobs.registry import ModelRegistry
from vlarena.jobs.store import JobStore
from vlarena.jobs.streams import JobStreams
from vlarena.settings import Settings

# Dependencies are `async def` and read `app.state` themselves: FastAPI runs plain `def`
# dependencies in a thread pool, and every level of sub-dependency costs time per request.


@dataclass
class Services:
    """Everything one gateway process shares between requests (on `app.state.services`)."""

    settings: Settings
    keys: ApiKeys
    store: JobStore
    documents: JobDocuments
    streams: JobStreams
    registry: ModelRegistry
    dispatcher: JobDispatcher


def _services(request: Request) -> Services:
    return request.app.state.services


async def get_store(request: Request) -> JobStore:
    return _services(request).store


async def get_streams(request: Request) -> JobStreams:
    return _services(request).streams


async def get_registry(request: Request) -> ModelRegistry:
    return _services(request).registry


async def get_dispatcher(request: Request) -> JobDispatcher:
    return _services(request).dispatcher


async def get_confinement(request: Request) -> Confinement:
    return Confinement.from_settings(_services(request).settings)


StoreDep = Annotated[JobStore, Depends(get_store)]
StreamsDep = Annotated[JobStreams, Depends(get_streams)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
DispatcherDep = Annotated[JobDispatcher, Depends(get_dispatcher)]
ConfinementDep = Annotated[Confinement, Depends(get_confinement)]


class ApiKeyAuth(HTTPBearer):
    """`Authorization: Bearer <API key>`, checked against the scopes the route asks for.

    One security dependency (no sub-dependencies, so it costs little per request) that FastAPI
    also documents as the API's bearer scheme.
    """

    async def __call__(  # type: ignore[override]
        self, request: Request, security_scopes: SecurityScopes
    ) -> Principal:
        return authorize(request, security_scopes.scopes)


def authorize(request: Request, scopes: Iterable[str]) -> Principal:
    """The caller's principal if its key holds every one of `scopes`; 401 or 403 otherwise.

    Routes take it through `ReadAccess` and friends; the hottest route calls it directly
    and declares its security in the OpenAPI document itself (see `READ_SECURITY`).
    """
    services = _services(request)
    if services.settings.auth_disabled:
        return ANONYMOUS_ADMIN
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    principal = services.keys.authenticate(token) if scheme.lower() == "bearer" else None
    if principal is None:
        raise ApiError(
            401,
            "unauthenticated",
            "missing or unknown API key; send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    for scope in scopes:
        if not principal.allows(Scope(scope)):
            raise ApiError(
                403, "forbidden", f"API key {principal.name!r} lacks the '{scope}' scope"
            )
    return principal


api_key_auth = ApiKeyAuth(
    scheme_name="apiKey",
    description="An API key: `Authorization: Bearer <key>`. Scopes: read, submit, admin.",
)

# The OpenAPI security requirement of a route that calls `authorize` itself.
READ_SECURITY = [{api_key_auth.scheme_name: [Scope.READ.value]}]

ReadAccess = Annotated[Principal, Security(api_key_auth, scopes=[Scope.READ])]
SubmitAccess = Annotated[Principal, Security(api_key_auth, scopes=[Scope.SUBMIT])]
AdminAccess = Annotated[Principal, Security(api_key_auth, scopes=[Scope.ADMIN])]
