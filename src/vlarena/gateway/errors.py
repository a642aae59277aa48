"""The API's one error shape, `{"error": {"code", "message", "details"}}`, and its handlers."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vlarena.jobs.spec import field_path

log = logging.getLogger(__name__)

# Seconds a client waits before retrying while Redis is unreachable or full.
REDIS_RETRY_AFTER_SECONDS = 10


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str = Field(examples=["budget.samples: Input should be greater than 0"])
    details: Any = Field(default=None, description="Per-field problems for validation errors.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """An error the API reports on purpose, with its status and stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    502: "bad_gateway",
    503: "unavailable",
}


def validation_details(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors as `{field, message, type}`, the field a dotted spec path."""
    details = []
    for error in errors:
        path = field_path(error["loc"])
        if not path and error["type"].startswith("union_tag"):
            path = "type"
        message = error["msg"].removeprefix("Value error, ")
        details.append({"field": path, "message": message, "type": error["type"]})
    return details


def _summary(details: list[dict[str, Any]]) -> str:
    first = details[0]
    where = f"{first['field']}: " if first["field"] else ""
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return f"{where}{first['message']}{more}"


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(list(exc.errors()))
    return error_response(422, "validation_error", _summary(details), details)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES.get(exc.status_code, HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_"))
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    """503 while Redis cannot answer (unreachable, loading, out of connections, slow) or is
    full (`maxmemory` under `noeviction`); any other Redis error is a bug: 500."""
    if isinstance(exc, OutOfMemoryError):
        message = "the job store is full; retry later"
    elif isinstance(exc, RedisConnectionError | RedisTimeoutError):
        message = "the job store is unreachable; retry later"
    else:
        return await _unexpected_error(request, exc)
    log.warning("Redis unavailable on %s %s: %r", request.method, request.url.path, exc)
    return error_response(
        503, "unavailable", message, headers={"Retry-After": str(REDIS_RETRY_AFTER_SECONDS)}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RedisError, _redis_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route returns, each with an example."""
    examples = {
        400: ("bad_request", "There was an error parsing the body"),
        401: ("unauthenticated", "missing or unknown API key"),
        403: ("forbidden", "this API key lacks the 'submit' scope"),
        404: ("not_found", "no job job-1935a2f8c1a3f9e2b"),
        409: ("conflict", "job job-1935a2f8c1a3f9e2b has already SUCCEEDED"),
        413: (
            "payload_too_large",
            "the request body is 1.0 MiB or more; at most 1.0 MiB: send a smaller request",
        ),
        422: ("validation_error", "budget.samples: Input should be greater than 0"),
        429: (
            "too_many_requests",
            "API key 'ci' made more than 600 requests in 60 s; retry after the Retry-After seconds",
        ),
        502: ("inference_failed", "Triton failed to run fashion-vl-jepa.vision"),
        503: ("unavailable", "Redis is unreachable"),
    }
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        code, message = examples[status]
        details = (
            [
                {
                    "field": "budget.samples",
                    "message": message.split(": ", 1)[1],
                    "type": "greater_than",
                }
            ]
            if status == 422
            else None
        )
        responses[status] = {
            "model": ErrorBody,
            "description": HTTPStatus(status).phrase,
            "content": {
                "application/json": {
                    "example": {"error": {"code": code, "message": message, "details": details}}
                }
            },
        }
    return responses
