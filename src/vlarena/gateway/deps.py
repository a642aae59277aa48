"""What routes depend on: the stores, the dispatcher, the settings and the caller's identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from vlarena.gateway.auth import ANONYMOUS_ADMIN, ApiKeys, Principal, Scope
from vlarena.gateway.errors import ApiError
from vlarena.jobs.dispatch import JobDispatcher
from vlarena.jobs.registry import ModelRegistry
from vlarena.jobs.store import JobStore
from vlarena.jobs.streams import JobStreams
from vlarena.settings import Settings


@dataclass
class Services:
    """Everything one gateway process shares between requests (on `app.state.services`)."""

    settings: Settings
    keys: ApiKeys
    store: JobStore
    streams: JobStreams
    registry: ModelRegistry
    dispatcher: JobDispatcher


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_store(services: ServicesDep) -> JobStore:
    return services.store


def get_streams(services: ServicesDep) -> JobStreams:
    return services.streams


def get_registry(services: ServicesDep) -> ModelRegistry:
    return services.registry


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_dispatcher(services: ServicesDep) -> JobDispatcher:
    return services.dispatcher


StoreDep = Annotated[JobStore, Depends(get_store)]
StreamsDep = Annotated[JobStreams, Depends(get_streams)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DispatcherDep = Annotated[JobDispatcher, Depends(get_dispatcher)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key: `Authorization: Bearer <key>`. Scopes: read, submit, admin.",
)


def authenticate(
    security_scopes: SecurityScopes,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, checked against the scopes the route asks for (401 / 403 otherwise)."""
    if services.settings.auth_disabled:
        return ANONYMOUS_ADMIN
    principal = services.keys.authenticate(credentials.credentials) if credentials else None
    if principal is None:
        raise ApiError(
            401,
            "unauthenticated",
            "missing or unknown API key; send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    for scope in security_scopes.scopes:
        if not principal.allows(Scope(scope)):
            raise ApiError(
                403, "forbidden", f"API key {principal.name!r} lacks the '{scope}' scope"
            )
    return principal


ReadAccess = Annotated[Principal, Security(authenticate, scopes=[Scope.READ])]
SubmitAccess = Annotated[Principal, Security(authenticate, scopes=[Scope.SUBMIT])]
AdminAccess = Annotated[Principal, Security(authenticate, scopes=[Scope.ADMIN])]
