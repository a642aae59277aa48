"""What routes depend on: the stores, the dispatcher and the caller's identity (API key auth)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer, SecurityScopes

from vlarena.gateway.auth import ANONYMOUS_ADMIN, ApiKeys, Principal, Scope
from vlarena.gateway.documents import JobDocuments
from vlarena.gateway.errors import ApiError, error_responses
from vlarena.gateway.limits import RateLimits
from vlarena.jobs.confinement import Confinement
from vlarena.jobs.dispatch import JobDispatcher
from vlarena.jobs.ownership import Owner, owner_label, registered_names
from vlarena.jobs.registry import ModelRegistry
from vlarena.jobs.spec import AnyJobSpec
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
    limits: RateLimits


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


async def get_limits(request: Request) -> RateLimits:
    return _services(request).limits


async def get_confinement(request: Request) -> Confinement:
    return Confinement.from_settings(_services(request).settings)


StoreDep = Annotated[JobStore, Depends(get_store)]
StreamsDep = Annotated[JobStreams, Depends(get_streams)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
DispatcherDep = Annotated[JobDispatcher, Depends(get_dispatcher)]
ConfinementDep = Annotated[Confinement, Depends(get_confinement)]
LimitsDep = Annotated[RateLimits, Depends(get_limits)]


class ApiKeyAuth(HTTPBearer):
    """`Authorization: Bearer <API key>`, checked against the scopes the route asks for.

    One security dependency (no sub-dependencies, so it costs little per request) that FastAPI
    also documents as the API's bearer scheme.
    """

    async def __call__(  # type: ignore[override]
        self, request: Request, security_scopes: SecurityScopes
    ) -> Principal:
        return await admit(request, security_scopes.scopes)


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


def require_owner(principal: Principal, owner: Owner | None, what: str) -> None:
    """403 unless the caller's key made `what`, is of its team, or is an admin key."""
    if not principal.may_change(owner):
        raise ApiError(
            403,
            "forbidden",
            f"{what} belongs to {owner_label(owner)}; API key {principal.name!r} may not change "
            "it (its owner's keys and admin keys may)",
        )


async def check_model_names(
    spec: AnyJobSpec, principal: Principal, registry: ModelRegistry
) -> None:
    """403 naming the field when the job would register a version under a model name another
    key (or team) owns."""
    names = registered_names(spec)
    index, owner = await registry.admit(principal.caller, [n for _, n in names])
    if index:
        field, name = names[index - 1]
        message = (
            f"model {name!r} belongs to {owner}; API key {principal.name!r} may not register "
            "versions of it: choose another modelName"
        )
        raise ApiError(
            403,
            "forbidden",
            f"{field}: {message}",
            [{"field": field, "message": message, "type": "model_owner"}],
        )


_CHARGED = "vlarena.charged"


async def admit(request: Request, scopes: Iterable[str]) -> Principal:
    """`authorize`, then the key's request is counted against its rate limit (once per request:
    a route that authorises before reading its body asks again through its dependency)."""
    principal = authorize(request, scopes)
    if _CHARGED not in request.scope:
        request.scope[_CHARGED] = True
        await _services(request).limits.charge(principal.name)
    return principal


api_key_auth = ApiKeyAuth(
    scheme_name="apiKey",
    description="An API key: `Authorization: Bearer <key>`. Scopes: read, submit, admin.",
)

# The OpenAPI security requirement of a route that calls `authorize` itself.
READ_SECURITY = [{api_key_auth.scheme_name: [Scope.READ.value]}]

ReadAccess = Annotated[Principal, Security(api_key_auth, scopes=[Scope.READ])]
SubmitAccess = Annotated[Principal, Security(api_key_auth, scopes=[Scope.SUBMIT])]


def required_scopes(route: APIRoute) -> list[str] | None:
    """The scopes a route's API key must hold; None for a route open to anyone."""
    for dependency in route.dependant.dependencies:
        if dependency.call is api_key_auth:
            return list(dependency.own_oauth_scopes or [])
    if route.openapi_extra and "security" in route.openapi_extra:
        requirements = route.openapi_extra["security"]
        return [scope for entry in requirements for scopes in entry.values() for scope in scopes]
    return None


def takes_body(route: APIRoute) -> bool:
    return route.body_field is not None or "requestBody" in (route.openapi_extra or {})


def document_statuses(routes: Iterable[Any]) -> None:
    """Lists in each route's OpenAPI entry the error statuses its key check, rate limit, body
    limit and validation can answer, beside those the route lists itself."""
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        statuses = set()
        scopes = required_scopes(route)
        if scopes is not None:
            statuses |= {401, 429}
            if set(scopes) - {Scope.READ.value}:
                statuses.add(403)
        if takes_body(route):
            statuses |= {400, 413, 422}
        dependant = route.dependant
        if dependant.path_params or dependant.query_params or dependant.header_params:
            statuses.add(422)
        for status, entry in error_responses(*sorted(statuses)).items():
            route.responses.setdefault(status, entry)


class KeyFirstRoute(APIRoute):
    """A route that checks the caller's key (and its rate) before it reads the body.

    FastAPI reads and parses a body before it resolves any dependency, the key's included, so
    without this anyone could make the gateway parse up to `max_body_bytes` per request.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scopes = required_scopes(self)
        if self.body_field is None or scopes is None:
            return handler

        async def key_first(request: Request) -> Response:
            await admit(request, scopes)
            return await handler(request)

        return key_first
