"""Compare-job reports in the browser, through signed, expiring links.

A browser cannot send a Bearer header, so the API hands out links instead:
`POST /v1/jobs/{id}/report-link` and `POST /v1/reports/link` (read scope) return URLs with
`expires` and `sig` query parameters. `sig` is an HMAC-SHA256, under the gateways' link secret,
of what the link opens (a job's report, or the index) and its expiry. A link without a valid
signature, or past its expiry, gets 401.

`GET /v1/jobs/{id}/report` redirects to the page under `/v1/shared/{id}/{expires}/{sig}/`, a
prefix that carries the signature in the path: the page's relative links (figures,
metrics.json) resolve under it and stay signed. They reach only the report: the files under
the job's report/ and the metrics.json it was drawn from, never models or checkpoints (those
need an API key).
`GET /reports` is an index of every finished compare job with a report, each linked with the
index link's expiry. Pages are the stored `report.html` (self-contained: images inlined, Plotly
shipped with it), so the gateway renders nothing and imports no plotting library.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import mimetypes
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from pydantic import Field

from vlarena.gateway.deps import KeyFirstRoute, ReadAccess, StoreDep, _services
from vlarena.gateway.errors import ApiError, error_responses
from vlarena.gateway.schemas import example_response
from vlarena.jobs.records import JobRecord, RecordModel
from vlarena.jobs.spec import JobType
from vlarena.jobs.states import JobState
from vlarena.rundirs import JobDir

router = APIRouter(tags=["reports"], route_class=KeyFirstRoute)

REPORT_PAGE = "report/report.html"
REPORT_JSON = "report/report.json"
JobId = Annotated[
    str, PathParam(pattern=r"^job-[0-9a-f]{11,}$", examples=["job-1935a2f8c1a3f9e2b"])
]
if TYPE_CHECKING:
    # What the handlers receive: both query parameters are optional, None when absent.
    Expires = int | None
    Signature = str | None
else:
    # Declared without `| None` so that the OpenAPI schema and the validation errors stay those of
    # a plain integer and string; FastAPI passes the default (None) when a parameter is absent.
    Expires = Annotated[int, Query(ge=0, le=10**12, description="Unix time the link expires at.")]
    Signature = Annotated[str, Query(pattern=r"^[0-9a-f]{64}$", description="The link's HMAC.")]
MAX_TTL_SECONDS = 30 * 24 * 3600
INDEX_SUBJECT = "reports-index"
INDEX_LIMIT = 200
LINK_ERRORS: dict[int | str, dict[str, Any]] = {
    401: example_response(
        {
            "error": {
                "code": "link_expired",
                "message": "this link expired at 2025-11-29T00:00:00+00:00; ask the API for a new "
                "one (POST /v1/jobs/{id}/report-link)",
                "details": None,
            }
        },
        "Unauthorized: no, a wrong or an expired signature",
    )
}


class LinkRequest(RecordModel):
    expires_in_seconds: int | None = Field(
        default=None, ge=60, le=MAX_TTL_SECONDS, description="Default: the gateway's setting."
    )


class SignedLink(RecordModel):
    url: str = Field(description="Absolute URL; anyone holding it can read until it expires.")
    expires_at: datetime


async def link_secret(request: Request) -> bytes:
    """The secret every gateway process signs with: the setting, else one shared in Redis."""
    state = request.app.state
    cached = getattr(state, "link_secret", None)
    if cached is not None:
        return cached
    services = _services(request)
    if services.settings.link_secret:
        secret = services.settings.link_secret.encode()
    else:
        key = f"{services.settings.key_prefix}link-secret"
        redis = services.store.redis
        await redis.set(key, secrets.token_hex(32), nx=True)
        value = await redis.get(key)
        secret = value if isinstance(value, bytes) else str(value).encode()
    state.link_secret = secret
    return secret


def sign(secret: bytes, subject: str, expires: int) -> str:
    return hmac.new(secret, f"{subject}:{expires}".encode(), hashlib.sha256).hexdigest()


async def _check(request: Request, subject: str, expires: int | None, sig: str | None) -> None:
    if expires is None or sig is None:
        raise ApiError(
            401,
            "link_required",
            "open this page through a signed link: POST /v1/jobs/{id}/report-link or "
            "POST /v1/reports/link with your API key",
        )
    if not hmac.compare_digest(sign(await link_secret(request), subject, expires), sig):
        raise ApiError(401, "link_invalid", "this link's signature is not valid; ask for a new one")
    if expires < time.time():
        when = datetime.fromtimestamp(expires, UTC).isoformat()
        raise ApiError(401, "link_expired", f"this link expired at {when}; ask for a new one")


async def _expiry(request: Request, body: LinkRequest | None) -> int:
    ttl = body.expires_in_seconds if body and body.expires_in_seconds else None
    return int(time.time()) + (ttl or _services(request).settings.link_ttl_seconds)


def _in_report(job: JobDir, target: Path) -> bool:
    """Whether a resolved file is one a signed link may open: the report's own files (its
    page, report.json, figures) or the metrics.json the page links to."""
    return target.is_relative_to(job.report.resolve()) or target == job.metrics.resolve()


def _has_report(record: JobRecord) -> bool:
    return bool(record.workdir and (Path(record.workdir) / REPORT_PAGE).is_file())


async def _report_url(request: Request, job_id: str, expires: int) -> str:
    sig = sign(await link_secret(request), job_id, expires)
    url = request.url_for("job_report", job_id=job_id)
    return f"{url}?{urlencode({'expires': expires, 'sig': sig})}"


@router.post(
    "/v1/jobs/{job_id}/report-link",
    summary="A signed link to a job's report page",
    response_model=SignedLink,
    responses={
        200: example_response(
            {
                "url": "http://127.0.0.1:8080/v1/jobs/job-1935a2f8c1a3f9e2b/report?expires="
                "1764374400&sig=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "expiresAt": "2025-11-29T00:00:00Z",
            }
        ),
        **error_responses(401, 404, 422),
    },
)
async def report_link(
    job_id: JobId,
    request: Request,
    _principal: ReadAccess,
    store: StoreDep,
    body: Annotated[LinkRequest | None, Body()] = None,
) -> SignedLink:
    """A compare job's report as a link a browser opens without an API key, until it expires.
    404 while the job has no report (not a compare job, or not finished)."""
    record = await store.get(job_id)
    if record is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    if not _has_report(record):
        raise ApiError(
            404,
            "not_found",
            f"job {job_id} has no report: compare jobs write one when they succeed, "
            f"and it is {record.state}",
        )
    expires = await _expiry(request, body)
    return SignedLink(
        url=await _report_url(request, job_id, expires),
        expires_at=datetime.fromtimestamp(expires, UTC),
    )


@router.get(
    "/v1/jobs/{job_id}/report",
    name="job_report",
    summary="A job's report page (signed link)",
    response_class=RedirectResponse,
    status_code=307,
    responses={
        307: {"description": "To the page under the link's signed prefix."},
        **LINK_ERRORS,
    },
)
async def job_report(
    job_id: JobId, request: Request, expires: Expires = None, sig: Signature = None
) -> RedirectResponse:
    await _check(request, job_id, expires, sig)
    target = request.url_for(
        "shared_file", job_id=job_id, expires=str(expires), sig=sig, path=REPORT_PAGE
    )
    return RedirectResponse(str(target), status_code=307)


@router.get(
    "/v1/shared/{job_id}/{expires}/{sig}/{path:path}",
    name="shared_file",
    summary="A file of a job's report under a signed report link",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file's bytes.",
            "content": {"text/html": {"example": "<!DOCTYPE html><title>vlarena report</title>"}},
        },
        **LINK_ERRORS,
        404: error_responses(404)[404],
    },
)
async def shared_file(
    job_id: JobId,
    expires: Annotated[int, PathParam(ge=0, le=10**12)],
    sig: Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$")],
    path: str,
    request: Request,
    store: StoreDep,
) -> FileResponse:
    await _check(request, job_id, expires, sig)
    record = await store.get(job_id)
    if record is None or not record.workdir:
        raise ApiError(404, "not_found", f"job {job_id} has no files")
    job = JobDir(Path(record.workdir))
    target = job.file(path)
    if target is None or not _in_report(job, target):
        raise ApiError(404, "not_found", f"no file {path!r} in the report of job {job_id}")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(
        target, media_type=media_type, headers={"Cache-Control": "private, max-age=300"}
    )


@router.post(
    "/v1/reports/link",
    summary="A signed link to the index of reports",
    response_model=SignedLink,
    responses={
        200: example_response(
            {
                "url": "http://127.0.0.1:8080/reports?expires=1764374400&sig="
                "5d41402abc4b2a76b9719d911017c592ae2c8b2f9e6c2f5e1f1b5c1c8f2e4a1d",
                "expiresAt": "2025-11-29T00:00:00Z",
            }
        ),
        **error_responses(401, 422),
    },
)
async def reports_link(
    request: Request, _principal: ReadAccess, body: Annotated[LinkRequest | None, Body()] = None
) -> SignedLink:
    expires = await _expiry(request, body)
    sig = sign(await link_secret(request), INDEX_SUBJECT, expires)
    url = f"{request.url_for('reports_index')}?{urlencode({'expires': expires, 'sig': sig})}"
    return SignedLink(url=url, expires_at=datetime.fromtimestamp(expires, UTC))


INDEX_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2328}"
    "table{border-collapse:collapse}td,th{padding:.4rem .8rem;border-bottom:1px solid #d0d7de;"
    "text-align:left}"
)


@router.get(
    "/reports",
    name="reports_index",
    summary="The index of comparison reports (signed link)",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {"example": "<!DOCTYPE html><title>vlarena reports"}}},
        **LINK_ERRORS,
    },
)
async def reports_index(
    request: Request, store: StoreDep, expires: Expires = None, sig: Signature = None
) -> HTMLResponse:
    """Every succeeded compare job that has a report, newest first, each linked."""
    await _check(request, INDEX_SUBJECT, expires, sig)
    assert expires is not None
    jobs, _ = await store.list_jobs(
        states=[JobState.SUCCEEDED], types=[JobType.COMPARE], limit=INDEX_LIMIT
    )
    rows = []
    for record in jobs:
        if not _has_report(record):
            continue
        url = await _report_url(request, record.id, expires)
        finished = record.finished_at.isoformat(timespec="minutes") if record.finished_at else ""
        families = ", ".join((record.spec or {}).get("families") or ["all families"])
        dataset = (record.spec or {}).get("dataset") or {}
        rows.append(
            f'<tr><td><a href="{html.escape(url)}">{html.escape(record.id)}</a></td>'
            f"<td>{html.escape(str(dataset.get('name') or dataset.get('uri') or ''))}</td>"
            f"<td>{html.escape(families)}</td><td>{html.escape(finished)}</td></tr>"
        )
    body = (
        "<table><thead><tr><th>job</th><th>dataset</th><th>families</th><th>finished</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
        if rows
        else "<p>No comparison reports yet: submit a compare job.</p>"
    )
    return HTMLResponse(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>vlarena reports</title>'
        f'<link rel="icon" href="data:,"><style>{INDEX_STYLE}</style></head><body>'
        f"<h1>Comparison reports</h1>{body}</body></html>"
    )
