"""`GatewayClient`: the gateway's REST API from Python, including following server-sent events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from vlarena.settings import Settings

# Submissions sent in all, at most, when the gateway's answer is lost or says 503; the wait
# between two is the answer's Retry-After, or doubles from the first, up to the longest.
SUBMIT_TRIES = 5
SUBMIT_WAIT_SECONDS = (0.5, 30.0)


class GatewayError(Exception):
    """An error answer of the gateway: its status and `{"error": {code, message, details}}`."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event: `log`, `event` or `end`, its id and its decoded data."""

    event: str
    id: str | None
    data: dict[str, Any]


def parse_sse(lines: Iterator[str]) -> Iterator[StreamEvent]:
    """Server-sent events from the lines of a `text/event-stream` body (comments skipped)."""
    event, entry_id = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield StreamEvent(event, entry_id, json.loads("\n".join(data)))
            event, entry_id, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                entry_id = value
            elif name == "data":
                data.append(value)


class GatewayClient:
    """A thin, typed-by-convention client: methods return the API's JSON as dicts."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayClient:
        return cls(settings.api_url, settings.api_key)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        _raise_for_error(response)
        return response.json() if response.content else None

    # Jobs.

    def submit_job(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Creates a job (or, with `validateOnly`, checks the spec); returns the API's answer.

        A spec without a `submissionId` gets one, and a submission whose answer was lost (a
        timeout, a dropped connection) or was 503 is sent again with it: the gateway then
        returns the job it made, if it made one, so a retry never runs a job twice.
        """
        if not spec.get("validateOnly") and not spec.get("submissionId"):
            spec = {**spec, "submissionId": f"cli-{uuid.uuid4().hex}"}
        wait, longest = SUBMIT_WAIT_SECONDS
        for _ in range(SUBMIT_TRIES - 1):
            try:
                response = self.http.request("POST", "/v1/jobs", json=spec)
            except httpx.TransportError:
                pause = wait
            else:
                if response.status_code != 503:
                    _raise_for_error(response)
                    return response.json()
                pause = _retry_after(response, wait)
            time.sleep(min(pause, longest))
            wait = min(2 * wait, longest)
        return self._request("POST", "/v1/jobs", json=spec)

    def list_jobs(
        self,
        *,
        states: list[str] | None = None,
        types: list[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if states:
            params["state"] = states
        if types:
            params["type"] = types
        if cursor:
            params["cursor"] = cursor
        return self._request("GET", "/v1/jobs", params=params)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel")

    def logs(self, job_id: str, *, after: str | None = None, limit: int = 1000) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        return self._request("GET", f"/v1/jobs/{job_id}/logs", params=params)

    def events(self, job_id: str, *, after: str | None = None) -> dict[str, Any]:
        params = {"after": after} if after else {}
        return self._request("GET", f"/v1/jobs/{job_id}/events", params=params)

    def follow(
        self,
        job_id: str,
        *,
        stream: str = "logs",
        after: str | None = None,
        reconnect_seconds: float = 1.0,
        max_reconnects: int = 60,
    ) -> Iterator[StreamEvent]:
        """Entries of a job's logs (or events) as they come, ending with the `end` event.

        A dropped connection (a gateway restart, a proxy timeout) is resumed from the last
        entry seen, so no line is lost or repeated.
        """
        last = after
        failures = 0
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                with self.http.stream(
                    "GET",
                    f"/v1/jobs/{job_id}/{stream}",
                    params={"follow": "true"},
                    headers=headers,
                    timeout=httpx.Timeout(self.http.timeout.connect, read=None),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        _raise_for_error(response)
                    for event in parse_sse(response.iter_lines()):
                        failures = 0
                        if event.id:
                            last = event.id
                        yield event
                        if event.event == "end":
                            return
            except httpx.TransportError:
                failures += 1
                if failures > max_reconnects:
                    raise
                time.sleep(reconnect_seconds)

    def artifacts(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}/artifacts")

    def report_link(self, job_id: str, *, expires_in: int | None = None) -> dict[str, Any]:
        """A signed URL of the job's report page that a browser opens without a key."""
        body = {"expiresInSeconds": expires_in} if expires_in else None
        return self._request("POST", f"/v1/jobs/{job_id}/report-link", json=body)

    def download_artifact(self, job_id: str, path: str, destination: Path) -> Path:
        with self.http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{path}") as response:
            if response.status_code >= 400:
                response.read()
                _raise_for_error(response)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with destination.open("wb") as f:
                for chunk in response.iter_bytes():
                    f.write(chunk)
        return destination

    # Models.

    def list_models(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return self._request("GET", "/v1/models", params=params)

    def get_model(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/models/{name}")

    def versions(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/models/{name}/versions")

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        return self._request(
            "POST", f"/v1/models/{name}/aliases", json={"alias": alias, "version": version}
        )

    def remove_alias(self, name: str, alias: str) -> None:
        self._request("DELETE", f"/v1/models/{name}/aliases/{alias}")

    # Inference.

    def infer(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/{endpoint} (classify, caption, vqa, embed/image, embed/text) with a JSON
        body; images go in it base64-encoded (`image` or `images`)."""
        return self._request("POST", f"/v1/{endpoint}", json=body)


def _retry_after(response: httpx.Response, default: float) -> float:
    """The seconds a 503's Retry-After asks for (`default` when it names none)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", default)))
    except ValueError:
        return default


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise GatewayError(response.status_code, "http_error", response.text[:500]) from None
    raise GatewayError(
        response.status_code, error.get("code", ""), error.get("message", ""), error.get("details")
    )
