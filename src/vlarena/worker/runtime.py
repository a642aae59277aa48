"""A worker process's runtime: its identity, heartbeat, reaper and the job it runs."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery import Celery

from vlarena.jobs.dispatch import JobDispatcher
from vlarena.jobs.store import QUEUES, JobStore, connect
from vlarena.json_logs import job_context
from vlarena.settings import Settings
from vlarena.worker import metrics
from vlarena.worker.execution import JobExecution
from vlarena.worker.loop import BackgroundLoop

log = logging.getLogger(__name__)

T = TypeVar("T")

# The exit status of a worker that ended itself because a runner would not stop (EX_SOFTWARE).
EXIT_ABANDONED = 70


class WorkerRuntime:
    """Everything one worker process shares: the store on a loop thread, and two daemons.

    The heartbeat registers the worker (so the gateway can tell when no worker serves a
    queue); the reaper requeues jobs whose lease lapsed, releases retries whose backoff is over,
    and keeps a wake-up message in the broker while jobs wait. Every worker runs a reaper: their
    scripts are atomic, so several at once do no harm, and any surviving worker recovers the
    jobs of one that died. A reaper of a worker that may launch Kubernetes Jobs also deletes the
    Jobs that lost attempts of multi-node jobs left behind.
    """

    def __init__(self, settings: Settings, queues: list[str], app: Celery) -> None:
        self.settings = settings
        self.queues = queues
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.loop = BackgroundLoop()
        self.store = JobStore(connect(settings), settings)
        self.dispatcher = JobDispatcher(settings, app)
        self.shutdown = threading.Event()
        self.current_job = ""
        self.started_at = str(int(time.time() * 1000))
        self._stopped = threading.Event()
        self._daemons = [
            threading.Thread(target=self._heartbeat, name="vlarena-heartbeat", daemon=True),
            threading.Thread(target=self._reaper, name="vlarena-reaper", daemon=True),
        ]

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        return self.loop.call(coroutine, timeout)

    def start(self) -> None:
        self._register()
        for thread in self._daemons:
            thread.start()
        log.info("worker %s takes jobs from %s", self.worker_id, ", ".join(self.queues))

    def stop(self) -> None:
        self._stopped.set()
        try:
            self.call(self.store.depart(self.worker_id, self.queues), timeout=5)
        except Exception:
            log.warning("could not deregister %s", self.worker_id, exc_info=True)
        self.loop.close()

    def wake(self, queue: str) -> None:
        try:
            self.dispatcher.wake(queue)
        except Exception:
            log.warning("could not wake a worker of %s; the reaper retries", queue, exc_info=True)

    def abandon(self, reason: str) -> None:
        """Ends this process at once (a runner that will not return holds the worker's only job
        thread for good); its supervisor starts a fresh one."""
        log.critical("ending worker %s: %s", self.worker_id, reason)
        self.shutdown.set()
        try:
            self.call(self.store.depart(self.worker_id, self.queues), timeout=5)
        except Exception:
            log.warning("could not deregister %s", self.worker_id, exc_info=True)
        logging.shutdown()
        os._exit(EXIT_ABANDONED)

    def run_next(self, queue: str) -> None:
        """Runs the next job of `queue`, if any (one wake-up message, at most one job)."""
        if self.shutdown.is_set():
            self.wake(queue)
            return
        claim = self.call(self.store.claim(queue, self.worker_id))
        if claim is None:
            return
        self.current_job = claim.job_id
        self._register()
        try:
            with job_context(claim.job_id):
                log.info("attempt %d of %s starts on %s", claim.attempt, claim.job_id, queue)
                JobExecution(self, claim).run()
        finally:
            self.current_job = ""
            self._register()

    def running_job(self) -> dict[str, str] | None:
        """The stored hash of the job this worker runs now, or None when it is idle."""
        job_id = self.current_job
        return self.call(self.store.fields(job_id), timeout=2) if job_id else None

    def _register(self) -> None:
        info = {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "queues": ",".join(self.queues),
            "startedAt": self.started_at,
            "job": self.current_job,
        }
        try:
            self.call(self.store.heartbeat(self.worker_id, self.queues, info), timeout=5)
        except Exception:
            log.warning("worker heartbeat failed", exc_info=True)

    def _heartbeat(self) -> None:
        while not self._stopped.wait(self.settings.heartbeat_seconds):
            self._register()

    def _reaper(self) -> None:
        interval = self.settings.reaper_interval_seconds
        # Spread the reapers of workers started together.
        while not self._stopped.wait(interval * random.uniform(0.8, 1.2)):
            try:
                self.reap_once()
            except Exception:
                log.warning("reaper pass failed", exc_info=True)

    def reap_once(self) -> None:
        runnable = self.call(self.store.reap())
        if self.settings.kubernetes_enabled:
            self.delete_cluster_jobs()
        for queue in runnable:
            metrics.REAPED.inc()
            self.wake(queue)
        for queue in QUEUES:
            if queue in runnable:
                continue
            # A job waits but no wake-up message does (lost with a dead worker, or never sent
            # because the broker was down): send one.
            if self.call(self.store.waiting(queue)) and not self.dispatcher.pending_messages(queue):
                self.wake(queue)

    def delete_cluster_jobs(self) -> None:
        """Deletes the Kubernetes Jobs of multi-node attempts the reaper found lost (and so
        requeued, failed or cancelled their job); what fails now is tried at the next pass."""
        from vlarena.worker.launcher import delete_attempt_jobs

        for job_id, attempt in self.call(self.store.cluster_cleanups()):
            try:
                deleted = delete_attempt_jobs(self.settings, job_id, attempt)
            except Exception:
                log.warning("could not delete the Kubernetes Jobs of %s", job_id, exc_info=True)
                continue
            self.call(self.store.cluster_cleaned(job_id, attempt))
            if deleted:
                log.info("deleted Kubernetes Jobs of lost attempts: %s", ", ".join(deleted))
