"""JSON log lines for the gateway, the workers and triton-sync, tagged with request and job ids.

Each record becomes one JSON object per line (`time`, `level`, `logger`, `message`, and
`request_id` / `job_id` when known), so a log stack indexes them without parsing. The ids come
from context variables that the gateway's request middleware and the worker's job execution set,
or from `extra={"job_id": ...}` on one call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("vlarena_request_id", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("vlarena_job_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra=` fields are kept, exceptions become `exc_info`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        job_id = JOB_ID.get()
        if request_id:
            entry["request_id"] = request_id
        if job_id:
            entry["job_id"] = job_id
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str = "INFO", log_format: str = "json") -> dict[str, Any]:
    """A `logging.config.dictConfig` for a service process: root and uvicorn's loggers to stderr.

    uvicorn applies it in each of its worker processes (`uvicorn.run(log_config=...)`).
    """
    formatter = (
        {"()": f"{__name__}.JsonFormatter"}
        if log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "level": level.upper(), "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery")
        },
    }


def configure_logging(level: str = "INFO", log_format: str = "json") -> None:
    """Sends this process's log records to stderr, as JSON lines unless `log_format` is text."""
    logging.config.dictConfig(logging_config(level, log_format))


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tags the records logged inside the block (in this thread or task) with `job_id`."""
    token = JOB_ID.set(job_id)
    try:
        yield
    finally:
        JOB_ID.reset(token)
