"""One ASGI layer for what every request gets: an id and its metrics.

The id is the caller's `X-Request-ID` when it is short and plain (so it cannot forge log
fields), or a new one; the gateway's log lines carry it (`vlarena.json_logs.REQUEST_ID`) and
the response returns it. The metrics count and time each request by its route template (not its
raw path, which would make a series per job id). Both are one middleware because each ASGI
layer costs a coroutine and a wrapped `send` on every request of the hottest routes.

Requests are tallied in plain Python (`TALLY`) and written to prometheus-client's series at
most once per `FLUSH_SECONDS` (by the app's lifespan, and before `/metrics` renders): in
multiprocess mode every write of a series takes a lock, checks the process id and writes a
memory-mapped file, five writes per request where a tally flushed each second makes a handful
per second. The in-flight gauge is the count at the last flush. A process killed between
flushes loses at most its last second of counts.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import re
import time
from collections import Counter, defaultdict
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlarena.gateway.metrics import HTTP_IN_FLIGHT, HTTP_REQUEST_DURATION, HTTP_REQUESTS
from vlarena.json_logs import REQUEST_ID

HEADER = b"x-request-id"
_ACCEPTED = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


FLUSH_SECONDS = 1.0


class _RequestIds:
    """New request ids of 16 hex digits: a random prefix drawn once per process (a forked child
    draws its own) and a counter, so ids differ across processes and restarts without a call to
    the OS's random source per request."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(4).hex().encode()
        self._counter = itertools.count()

    def new(self) -> bytes:
        return b"%s%08x" % (self._prefix, next(self._counter) & 0xFFFFFFFF)


_IDS = _RequestIds()


def request_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The caller's id when acceptable, else a new one."""
    for name, value in headers:
        if name == HEADER:
            if _ACCEPTED.fullmatch(value):
                return value
            break
    return _IDS.new()


def observe_many(histogram: Any, values: list[float]) -> None:
    """Adds `values` to a histogram child as `observe` would one by one, with one write per
    bucket hit and one to the sum (prometheus-client's `_sum` and `_buckets`, which hold the
    series' values); one `observe` per value on a client that keeps them otherwise."""
    buckets, total = getattr(histogram, "_buckets", None), getattr(histogram, "_sum", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    if buckets is None or total is None or bounds is None:
        for value in values:
            histogram.observe(value)
        return
    hits = Counter(bisect.bisect_left(bounds, value) for value in values)
    total.inc(sum(values))
    for index, count in hits.items():
        buckets[index].inc(count)


class RequestTally:
    """This process's request metrics since the last flush, in plain Python."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._counts: Counter[tuple[str, str, int]] = Counter()
        self._durations: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
        # Labelled children by label values: `labels()` validates its arguments on every call.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def record(self, template: str, method: str, status: int, seconds: float) -> None:
        self._counts[(template, method, status)] += 1
        self._durations[(template, method)].append(seconds)

    def flush(self) -> None:
        """Writes what was tallied since the last flush to the Prometheus series."""
        counts, self._counts = self._counts, Counter()
        durations, self._durations = self._durations, defaultdict(list)
        for counted, count in counts.items():
            counter = self._counters.get(counted)
            if counter is None:
                template, method, status = counted
                counter = HTTP_REQUESTS.labels(template, method, str(status))
                self._counters[counted] = counter
            counter.inc(count)
        for timed, values in durations.items():
            timer = self._timers.get(timed)
            if timer is None:
                timer = self._timers[timed] = HTTP_REQUEST_DURATION.labels(*timed)
            observe_many(timer, values)
        HTTP_IN_FLIGHT.set(self.in_flight)

    async def flush_every(self, seconds: float = FLUSH_SECONDS) -> None:
        """Flushes every `seconds` until cancelled, and once more then."""
        try:
            while True:
                await asyncio.sleep(seconds)
                self.flush()
        finally:
            self.flush()


TALLY = RequestTally()


class RequestObserver:
    """ASGI middleware: request ids, request counters, latency histograms, in-flight gauge."""

    def __init__(self, app: ASGIApp, tally: RequestTally = TALLY) -> None:
        self.app = app
        self.tally = tally

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
        tally = self.tally
        tally.in_flight += 1
        try:
            await self.app(scope, receive, send_observed)
        finally:
            REQUEST_ID.reset(token)
            tally.in_flight -= 1
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            tally.record(template, scope["method"], status, time.perf_counter() - start)
