"""The log store: each job's log lines and lifecycle events, kept as Redis streams."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Literal, TypedDict, cast, overload

from redis.asyncio import Redis

from vlarena.jobs.keys import RedisKeys
from vlarena.jobs.records import JobEvent, LogEntry, stream_id_time
from vlarena.jobs.states import TERMINAL_STATES

StreamKind = Literal["logs", "events"]

# The store's client decodes replies (`decode_responses=True`) and speaks RESP2, so a stream entry
# is an (id, fields) pair of strings; redis-py types replies for every protocol and decoding mode.
_StreamEntries = list[tuple[str, dict[str, str]]]


# The largest part of a stream entry id (`<ms>-<seq>`, two unsigned 64-bit numbers).
MAX_ENTRY_ID_PART = 2**64 - 1


def checked_entry_id(entry_id: str | None) -> str | None:
    """An entry id a reader resumes after (`<ms>-<seq>` digits), refused (ValueError) where
    Redis would refuse it: a part past 2^64 - 1, or the largest id, after which nothing is."""
    if entry_id is None:
        return None
    parts = [int(p) for p in entry_id.split("-")]
    if max(parts) > MAX_ENTRY_ID_PART or min(parts) == MAX_ENTRY_ID_PART:
        raise ValueError(f"not a stream entry id Redis can read after: {entry_id[:48]}")
    return entry_id


class _CommonFields(TypedDict):
    id: str
    time: datetime
    level: str
    message: str
    attempt: int


@overload
def _entry(kind: Literal["logs"], entry_id: str, fields: dict[str, str]) -> LogEntry: ...
@overload
def _entry(kind: Literal["events"], entry_id: str, fields: dict[str, str]) -> JobEvent: ...
@overload
def _entry(kind: StreamKind, entry_id: str, fields: dict[str, str]) -> LogEntry | JobEvent: ...
def _entry(kind: StreamKind, entry_id: str, fields: dict[str, str]) -> LogEntry | JobEvent:
    common: _CommonFields = {
        "id": entry_id,
        "time": stream_id_time(entry_id),
        "level": fields.get("level", "info"),
        "message": fields.get("message", ""),
        "attempt": int(fields.get("attempt", 0)),
    }
    if kind == "logs":
        return LogEntry(**common, source=fields.get("source", "job"))
    return JobEvent(**common, reason=fields.get("reason", ""))


class JobStreams:
    """Reads a job's logs or events, a page at a time or following new entries as they come.

    Entries are written by the store's scripts (lifecycle) and by workers (the job's own lines);
    they outlive the worker that wrote them. Followers are bounded: at most `max_followers` at
    once, each ended after `idle_seconds` without a new entry or `max_seconds` in all; the
    client resumes after the last entry it got (`Last-Event-ID`).
    """

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        *,
        max_followers: int = 100,
        idle_seconds: float = 300.0,
        max_seconds: float = 3600.0,
        poll_seconds: float = 1.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.max_followers = max_followers
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.poll_seconds = poll_seconds
        self.followers = 0

    def _key(self, kind: StreamKind, job_id: str) -> str:
        return self.keys.job_logs(job_id) if kind == "logs" else self.keys.job_events(job_id)

    @overload
    async def read(
        self, kind: Literal["logs"], job_id: str, *, after: str | None = None, limit: int = 1000
    ) -> list[LogEntry]: ...
    @overload
    async def read(
        self, kind: Literal["events"], job_id: str, *, after: str | None = None, limit: int = 1000
    ) -> list[JobEvent]: ...
    @overload
    async def read(
        self, kind: StreamKind, job_id: str, *, after: str | None = None, limit: int = 1000
    ) -> list[LogEntry] | list[JobEvent]: ...
    async def read(
        self, kind: StreamKind, job_id: str, *, after: str | None = None, limit: int = 1000
    ) -> list[LogEntry] | list[JobEvent]:
        """Up to `limit` entries after the entry id `after` (from the start when None)."""
        start = f"({after}" if after else "-"
        entries = cast(
            _StreamEntries,
            await self.redis.xrange(self._key(kind, job_id), start, "+", count=limit),
        )
        if kind == "logs":
            return [_entry(kind, entry_id, fields) for entry_id, fields in entries]
        return [_entry(kind, entry_id, fields) for entry_id, fields in entries]

    def admit_follower(self) -> bool:
        """Counts one more follower, or returns False when `max_followers` already follow."""
        if self.followers >= self.max_followers:
            return False
        self.followers += 1
        return True

    def release_follower(self) -> None:
        self.followers -= 1

    async def follow(
        self, kind: StreamKind, job_id: str, *, after: str | None = None
    ) -> AsyncIterator[LogEntry | JobEvent]:
        """Entries after `after`, then new ones as they are written, until the job has ended,
        nothing new came for `idle_seconds` or `max_seconds` have passed.

        A job's last lifecycle line is written in the same script that ends it, so once the
        job's state is final, reading to the end of the stream delivers everything. Between
        polls a follower holds no Redis connection (a blocking read would hold one for as
        long as it waits), so followers never starve the requests that share the pool.
        """
        key = self._key(kind, job_id)
        last = after or "0-0"
        started = active = time.monotonic()
        while time.monotonic() - started < self.max_seconds:
            replies = cast(
                list[tuple[str, _StreamEntries]], await self.redis.xread({key: last}, count=500)
            )
            for _stream, entries in replies or []:
                for entry_id, fields in entries:
                    last = entry_id
                    yield _entry(kind, entry_id, fields)
            if replies:
                active = time.monotonic()
                continue
            state = await self.redis.hget(self.keys.job(job_id), "state")
            if state is None or state in TERMINAL_STATES:
                rest = cast(_StreamEntries, await self.redis.xrange(key, f"({last}", "+"))
                for entry_id, fields in rest:
                    yield _entry(kind, entry_id, fields)
                return
            if time.monotonic() - active >= self.idle_seconds:
                return
            await asyncio.sleep(self.poll_seconds)
