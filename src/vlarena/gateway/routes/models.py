"""/v1/models: the model registry's models, versions and aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response
from fastapi import Path as PathParam

from vlarena.gateway.auth import Principal
from vlarena.gateway.deps import (
    KeyFirstRoute,
    ReadAccess,
    RegistryDep,
    SubmitAccess,
    require_owner,
)
from vlarena.gateway.errors import ApiError, error_responses
from vlarena.gateway.schemas import (
    MODEL_EXAMPLE,
    VERSION_EXAMPLE,
    AliasRequest,
    ModelList,
    VersionList,
    example_response,
)
from vlarena.jobs.records import ModelVersion, RegisteredModel
from vlarena.jobs.registry import ModelRegistry, VersionNotReady
from vlarena.jobs.spec import NAME_PATTERN

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=KeyFirstRoute)

ModelName = Annotated[str, PathParam(pattern=NAME_PATTERN, examples=["fashion-vl-jepa"])]
AliasName = Annotated[str, PathParam(pattern=NAME_PATTERN, examples=["production"])]


async def _require_model(registry: ModelRegistry, name: str) -> RegisteredModel:
    model = await registry.get_model(name)
    if model is None:
        raise ApiError(404, "not_found", f"no model {name!r}")
    return model


async def _require_own_model(registry: ModelRegistry, name: str, principal: Principal) -> None:
    """404 for an unknown model, 403 unless the caller's key (or team) owns it or is admin."""
    await _require_model(registry, name)
    require_owner(principal, await registry.owner(name), f"model {name!r}")


@router.get(
    "",
    summary="List registered models",
    responses={200: example_response({"items": [MODEL_EXAMPLE], "nextCursor": None})},
)
async def list_models(
    _principal: ReadAccess,
    registry: RegistryDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> ModelList:
    """Models by name with their newest version and aliases."""
    items, next_cursor = await registry.list_models(limit=limit, cursor=cursor)
    return ModelList(items=items, next_cursor=next_cursor)


@router.get(
    "/{name}",
    summary="Get a model",
    responses={200: example_response(MODEL_EXAMPLE), **error_responses(401, 404)},
)
async def get_model(
    name: ModelName, _principal: ReadAccess, registry: RegistryDep
) -> RegisteredModel:
    return await _require_model(registry, name)


@router.get(
    "/{name}/versions",
    summary="List a model's versions",
    responses={200: example_response({"items": [VERSION_EXAMPLE]}), **error_responses(401, 404)},
)
async def list_versions(
    name: ModelName, _principal: ReadAccess, registry: RegistryDep
) -> VersionList:
    """Versions newest first: status (PENDING, READY, FAILED), source job, metrics, aliases."""
    await _require_model(registry, name)
    return VersionList(items=await registry.versions(name))


@router.get(
    "/{name}/versions/{version}",
    summary="Get one version of a model",
    responses={200: example_response(VERSION_EXAMPLE), **error_responses(401, 404)},
)
async def get_version(
    name: ModelName,
    version: Annotated[int, PathParam(ge=1, examples=[3])],
    _principal: ReadAccess,
    registry: RegistryDep,
) -> ModelVersion:
    record = await registry.version(name, version)
    if record is None:
        raise ApiError(404, "not_found", f"no version {version} of model {name!r}")
    return record


@router.post(
    "/{name}/aliases",
    summary="Point an alias at a version",
    responses={200: example_response(MODEL_EXAMPLE), **error_responses(401, 403, 404, 409, 422)},
)
async def set_alias(
    name: ModelName,
    request: Annotated[
        AliasRequest,
        Body(
            openapi_examples={
                "promote": {
                    "summary": "Promote to production",
                    "value": {"alias": "production", "version": 3},
                },
                "candidate": {
                    "summary": "Mark a candidate",
                    "value": {"alias": "candidate", "version": 4},
                },
            }
        ),
    ],
    principal: SubmitAccess,
    registry: RegistryDep,
) -> RegisteredModel:
    """Sets `production`, `candidate` or any alias; only READY versions may carry one. The
    model's owner (the key that first registered it, or its team) or an admin key may.

    Moving an alias is one atomic write, recorded on the registry's event stream for the
    serving side to follow.
    """
    await _require_own_model(registry, name, principal)
    try:
        found = await registry.set_alias(name, request.alias, request.version)
    except VersionNotReady as exc:
        raise ApiError(
            409,
            "version_not_ready",
            f"{name} version {request.version} is {exc.status}; only READY versions take aliases",
        ) from None
    if not found:
        raise ApiError(404, "not_found", f"no version {request.version} of model {name!r}")
    return await _require_model(registry, name)


@router.delete(
    "/{name}/aliases/{alias}",
    status_code=204,
    summary="Remove an alias",
    responses=error_responses(401, 403, 404),
)
async def remove_alias(
    name: ModelName, alias: AliasName, principal: SubmitAccess, registry: RegistryDep
) -> Response:
    """The model's owner or an admin key may."""
    await _require_own_model(registry, name, principal)
    if not await registry.remove_alias(name, alias):
        raise ApiError(404, "not_found", f"model {name!r} has no alias {alias!r}")
    return Response(status_code=204)
