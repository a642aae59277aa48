"""Request limits: the body size of every route (an ASGI layer), and per-key request rates and
active-job quotas counted in Redis, so that they hold across gateway replicas."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable

from redis.asyncio import Redis
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlarena.gateway.errors import ApiError, error_response
from vlarena.jobs.keys import RedisKeys
from vlarena.jobs.states import TERMINAL_STATES
from vlarena.settings import Settings

MiB = 1024 * 1024
# Nobody knows when a job ends: a client at its quota polls this often.
QUOTA_RETRY_AFTER_SECONDS = 30
# A reservation whose job was never created (the gateway died in between) frees its slot then.
RESERVATION_MS = 60_000


def _too_large_message(size: int, limit: int, hint: str) -> str:
    return (
        f"the request body is {size / MiB:.1f} MiB or more; at most {limit / MiB:.1f} MiB: {hint}"
    )


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes its limit. An HTTPException so that
    FastAPI's body reading passes it on (anything else there becomes a 400) and the API's
    handler answers it in the one error shape."""

    def __init__(self, size: int, limit: int, hint: str) -> None:
        super().__init__(413, _too_large_message(size, limit, hint))


class BodyLimit:
    """ASGI middleware: every request body counted as it streams in, chunked or not; a declared
    Content-Length over the limit is answered 413 before the route runs, a stream that passes it
    ends with 413 before anything parses it. Paths under `image_prefixes` take images and get
    `image_limit(scope)` (read per request: the inference settings are made on first use)."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        image_prefixes: tuple[str, ...],
        image_limit: Callable[[Scope], int],
    ) -> None:
        self.app = app
        self.limit = limit
        self.image_prefixes = image_prefixes
        self.image_limit = image_limit

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if scope["path"].startswith(self.image_prefixes):
            return self.image_limit(scope), "send fewer or smaller images"
        return self.limit, "send a smaller request"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        streamed = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                streamed = True
        if declared is None and not streamed:
            await self.app(scope, receive, send)
            return
        limit, hint = self._limit(scope)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(
                413, "payload_too_large", _too_large_message(int(declared), limit, hint)
            )
            await response(scope, receive, send)
            return
        size = 0
        started = False

        async def receive_counted() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise BodyTooLarge(size, limit, hint)
            return message

        async def send_watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_counted, send_watched)
        except BodyTooLarge as exc:
            # Read outside a route's error handling (a route that streams its answer): answer
            # it here unless an answer has begun.
            if started:
                raise
            await error_response(413, "payload_too_large", str(exc.detail))(scope, receive, send)


CHARGE_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"""

# KEYS: the key's active set (job ids and reservations, scored by time), the submission key of
# the request's submissionId (a replay creates nothing, so it needs no slot).
# ARGV: the quota, a new reservation, the prefix of job keys, how long a reservation holds.
_RESERVE = """
if KEYS[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #members, 2 do
  local id, at = members[i], tonumber(members[i + 1])
  local active
  if string.sub(id, 1, 8) == 'reserve:' then
    active = at > now - tonumber(ARGV[4])
  else
    local state = redis.call('HGET', ARGV[3] .. id, 'state')
    active = state and not TERMINAL[state]
  end
  if not active then redis.call('ZREM', KEYS[1], id) end
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[2])
return 1
"""
_TERMINAL = f"local TERMINAL = {{{', '.join(f'{s.value} = true' for s in TERMINAL_STATES)}}}\n"


class RateLimits:
    """Per-key request rates (a fixed window) and active-job quotas, both kept in Redis."""

    def __init__(self, redis: Redis, keys: RedisKeys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.requests = settings.rate_limit_requests
        self.window_ms = settings.rate_limit_window_seconds * 1000
        self.max_active_jobs = settings.max_active_jobs_per_caller
        self._charge = redis.register_script(CHARGE_SCRIPT)
        self._reserve = redis.register_script(_TERMINAL + _RESERVE)

    async def charge(self, key_name: str) -> None:
        """Counts one request of the key; 429 once it has made its allowance this window."""
        if not self.requests:
            return
        count, ttl_ms = await self._charge(
            keys=[self.keys.limit_requests(key_name)], args=[self.window_ms]
        )
        if int(count) > self.requests:
            raise ApiError(
                429,
                "too_many_requests",
                f"API key {key_name!r} made more than {self.requests} requests in "
                f"{self.window_ms // 1000} s; retry after the Retry-After seconds",
                headers={"Retry-After": str(max(1, math.ceil(int(ttl_ms) / 1000)))},
            )

    async def reserve_job(self, key_name: str, submission_key: str) -> str | None:
        """A slot for one more job of the key (a token for `settle_job`), or 429 at its quota."""
        if not self.max_active_jobs:
            return None
        token = f"reserve:{uuid.uuid4().hex}"
        granted = await self._reserve(
            keys=[self.keys.limit_active_jobs(key_name), submission_key],
            args=[self.max_active_jobs, token, self.keys.job(""), RESERVATION_MS],
        )
        if not int(granted):
            raise ApiError(
                429,
                "too_many_jobs",
                f"API key {key_name!r} has {self.max_active_jobs} jobs waiting or running, its "
                "quota: wait for one to end, or cancel one",
                headers={"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)},
            )
        return token

    async def settle_job(self, key_name: str, token: str | None, job_id: str | None) -> None:
        """Turns a reservation into the job it made (or frees it when none was made)."""
        if token is None:
            return
        active = self.keys.limit_active_jobs(key_name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(active, token)
            if job_id is not None:
                pipe.zadd(active, {job_id: 0})
            await pipe.execute()
