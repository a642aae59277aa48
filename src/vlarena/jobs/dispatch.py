"""Waking workers through Celery: one message per runnable job, on the job's queue.

A message carries no job: it tells one worker "take the next job from queue X". The job store's
sorted set decides which job that is (highest priority, then oldest), so the order never depends
on the broker, and a message that is lost or left over costs nothing: the reaper tops the
broker queue up while jobs wait, and a worker that finds its queue empty goes back to waiting.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.exceptions import ChannelError

from vlarena.settings import Settings

RUN_NEXT_JOB_TASK = "vlarena.run_next_job"


def celery_queue(queue: str) -> str:
    """The broker queue of a job queue (`cpu` → `vlarena.cpu`)."""
    return f"vlarena.{queue}"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Configuration shared by the gateway (which sends) and workers (which consume)."""
    return {
        "broker_url": settings.broker_url or settings.redis_url,
        "broker_connection_retry_on_startup": True,
        # Broker keys live beside the job store's, under the same prefix.
        "broker_transport_options": {"global_keyprefix": f"{settings.key_prefix}broker:"},
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # Acknowledge on receipt: the lease, not redelivery, recovers a job whose worker died.
        "task_acks_late": False,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": False,
        "task_default_queue": celery_queue("cpu"),
    }


class JobDispatcher:
    """Sends wake-up messages and counts the ones waiting."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.app = app or Celery("vlarena", config_source=celery_config(settings))

    def wake(self, queue: str) -> None:
        """Asks one worker of `queue` to take the next job (blocking; run it off the event loop)."""
        self.app.send_task(RUN_NEXT_JOB_TASK, args=[queue], queue=celery_queue(queue))

    def pending_messages(self, queue: str) -> int:
        """Wake-up messages in the broker that no worker has taken yet."""
        with self.app.pool.acquire(block=True) as connection:
            try:
                _name, count, _consumers = connection.default_channel.queue_declare(
                    queue=celery_queue(queue), passive=True
                )
            except ChannelError:  # never declared: no message was ever sent to it
                return 0
        return int(count)
