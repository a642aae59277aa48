"""One ASGI layer for what every request gets: an id and its metrics.

The id is the caller's `X-Request-ID` when it is short and plain (so it cannot forge log
fields), or a new one; the gateway's log lines carry it (`vlarena.json_logs.REQUEST_ID`) and
the response returns it. The metrics count and time each request by its route template (not its
raw path, which would make a series per job id). Both are one middleware because each ASGI
layer costs a coroutine and a wrapped `send` on every request of the hottest routes.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlarena.gateway.metrics import HTTP_IN_FLIGHT, HTTP_REQUEST_DURATION, HTTP_REQUESTS
from vlarena.json_logs import REQUEST_ID

HEADER = b"x-request-id"
_ACCEPTED = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The caller's id when acceptable, else a new random one."""
    for name, value in headers:
        if name == HEADER:
            if _ACCEPTED.fullmatch(value):
                return value
            break
    return secrets.token_hex(8).encode()


class RequestObserver:
    """ASGI middleware: request ids, request counters, latency histograms, in-flight gauge."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Labelled children by label values: `labels()` validates its arguments on every call.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = request_id(scope["headers"])
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER, rid)]
            await send(message)

        token = REQUEST_ID.set(rid.decode())
        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            REQUEST_ID.reset(token)
            self._record(scope, status, time.perf_counter() - start)
            HTTP_IN_FLIGHT.dec()

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        counter = self._counters.get((template, method, status))
        if counter is None:
            counter = HTTP_REQUESTS.labels(template, method, str(status))
            self._counters[(template, method, status)] = counter
        timer = self._timers.get((template, method))
        if timer is None:
            timer = HTTP_REQUEST_DURATION.labels(template, method)
            self._timers[(template, method)] = timer
        counter.inc()
        timer.observe(seconds)
