"""One attempt of one job on this worker: its run directory, its lease, its events, its outcome.

How an attempt ends, and what its job does next:
- the runner returns: SUCCEEDED, unless a cancel or the deadline reached the attempt while it
  ran (then CANCELLED, or FAILED DeadlineExceeded): a runner that never polls `should_stop`
  (an evaluation) cannot turn a cancel into a success;
- UserInputError (bad input) or DeterministicFailure (a non-finite loss, unreadable data):
  FAILED at once, with the reason: another attempt would fail the same way;
- anything else (an OSError, a lost connection, a crash in a library) and a stalled runner:
  retried after an exponential backoff while maxRetries allows; so is a lost worker, by the
  reaper, which fails a job whose attempts lost their worker `poison_job_limit` times
  (PoisonJob);
- the worker shuts down (SIGTERM): preempted, requeued at once without spending a retry.

Redis outages. The lease thread renews the lease every second; while Redis does not answer, the
attempt goes on, since nobody can reap it meanwhile and the reaper's first pass after an outage
restarts every lease (`vlarena.jobs.lua`): an outage spends no retry, and Redis's answer once
it is back (FENCED, or not) decides. The outcome is one `finish`, sent again with a backoff
until Redis answers: it lands, or answers FENCED when the attempt provably lost the job (its
lease lapsed and was reaped, or another claim holds it). A finish whose reply was lost answers
the same when sent again.

The watchdog (on the lease thread). An attempt that reports nothing (progress, logs, metrics,
checkpoints) for `stall_timeout_seconds` is asked to stop (`should_stop`) and ends failed with
error Stalled, retried. A runner that has not returned `stall_grace_seconds` after it was asked
to stop (stalled, cancelled, past its deadline) is stuck where Python cannot interrupt it (a
hung read, a deadlocked collective): the watchdog records the attempt's outcome itself and
ends the worker process (`JobRuntime.abandon`), since a thread cannot be killed and this one
would hold the worker's one job slot (and its GPU memory) forever. The worker's supervisor
(its Deployment, compose's restart policy) starts a fresh process; the job, already requeued
or ended, is safe either way. Multi-node attempts are not watched: their pods report through
Kubernetes, and the launcher stops and deletes them on request.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vlarena.errors import DeterministicFailure, UserInputError
from vlarena.events import Event, as_dict, describe, event_from_dict
from vlarena.jobs.confinement import Confinement
from vlarena.jobs.spec import is_multi_node, parse_job_spec
from vlarena.jobs.states import TERMINAL_STATES
from vlarena.jobs.store import Claim, Finish, JobStore, RegisteredVersion
from vlarena.rundirs import AttemptsDir
from vlarena.settings import Settings
from vlarena.worker import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

Runner = Callable[..., dict[str, Any]]
# A progress line goes to the job's log at most this often (the job record always has the last).
PROGRESS_LOG_SECONDS = 5.0
# How often a running job's lease is renewed and its cancel/deadline state read.
LEASE_CHECK_SECONDS = 1.0
# The backoff of an attempt's final write while Redis does not answer: first wait, longest wait.
FINISH_RETRY_SECONDS = (0.2, 5.0)
# Errors that say Redis did not answer (or could not take the write now), not that it refused.
TRANSIENT_STORE_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    OutOfMemoryError,
    TimeoutError,
    OSError,
)


def _run_ml_core(
    spec: dict[str, Any],
    workdir: Path,
    *,
    on_event: Callable[[Event], None],
    should_stop: Callable[[], bool],
    confinement: Confinement,
) -> dict[str, Any]:
    from vlarena.experiments.jobs import run_job  # torch: imported by workers only

    return run_job(
        parse_job_spec(spec),
        workdir,
        on_event=on_event,
        should_stop=should_stop,
        confinement=confinement,
    )


# What runs each job type. Every runner takes (spec, workdir, *, on_event, should_stop,
# confinement), reads only what the confinement lets a submitted job read, resumes from what a
# previous attempt left in `workdir`, and returns {"metrics", "artifacts", "models"}.
JOB_RUNNERS: dict[str, Runner] = {
    "train": _run_ml_core,
    "evaluate": _run_ml_core,
    "compare": _run_ml_core,
}


def registry_name(name: str) -> str:
    """A model name fit for the registry: lower case letters, digits, `.`, `_` and `-`."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    return cleaned[:128] or "model"


class JobProgress:
    """Turns the ML core's per-run progress into progress of the whole job.

    A compare job trains one run per (family, seed) in order; its progress counts the samples of
    every run.
    """

    def __init__(self, spec: dict[str, Any], families: list[str]) -> None:
        seeds = int(spec.get("seeds", 1)) if spec.get("type") == "compare" else 1
        base_seed = int((spec.get("hyperparameters") or {}).get("seed", 0))
        self.runs = [(f, base_seed + k) for f in families for k in range(seeds)]
        self.samples_per_run = 0
        self.samples_seen = 0

    def carry_on_from(self, samples_seen: int | None, total_samples: int | None) -> None:
        """Starts from an earlier attempt's progress: a resumed attempt counts on from there."""
        self.samples_seen = samples_seen or 0
        if total_samples:
            self.samples_per_run = total_samples // max(len(self.runs), 1)

    def overall_samples(self, event: dict[str, Any]) -> int:
        """Samples of the whole job at an event of one run."""
        if event.get("totalSamples"):
            self.samples_per_run = int(event["totalSamples"])
        key = (event.get("family"), event.get("seed"))
        index = self.runs.index(key) if key in self.runs else 0
        return index * self.samples_per_run + int(event.get("samplesSeen") or 0)

    def of(self, event: dict[str, Any]) -> dict[str, Any]:
        """Job-level step, samples, percent and ETA for one progress event."""
        seen = self.overall_samples(event)
        total = max(len(self.runs), 1) * self.samples_per_run
        rate = event.get("samplesPerSecond")
        self.samples_seen = seen
        return {
            "step": event.get("step"),
            "samplesSeen": seen,
            "totalSamples": total or None,
            "percent": round(100.0 * seen / total, 2) if total else event.get("percent"),
            "etaSeconds": round((total - seen) / rate, 1) if rate and total else None,
            "samplesPerSecond": rate,
            "loss": event.get("loss"),
            **({"run": f"{event['family']} seed {event['seed']}"} if "family" in event else {}),
        }


def _compare_families(spec: dict[str, Any]) -> list[str]:
    if spec.get("families"):
        return list(spec["families"])
    from vlarena.models.registry import family_names  # what the ML core defaults to

    return family_names()


def progress_line(progress: dict[str, Any]) -> str:
    parts = []
    if progress.get("run"):
        parts.append(str(progress["run"]))
    if progress.get("step") is not None:
        parts.append(f"step {progress['step']}")
    if progress.get("totalSamples"):
        parts.append(
            f"{progress['samplesSeen']:,}/{progress['totalSamples']:,} samples "
            f"({progress['percent']:.1f}%)"
        )
    if progress.get("loss") is not None:
        parts.append(f"loss {progress['loss']:.3f}")
    if progress.get("samplesPerSecond"):
        parts.append(f"{progress['samplesPerSecond']:,.0f} samples/s")
    if progress.get("etaSeconds") is not None:
        parts.append(f"ETA {progress['etaSeconds']:,.0f} s")
    return " · ".join(parts)


class JobRuntime(Protocol):
    """What an attempt needs of the worker process running it (`WorkerRuntime` provides it).

    Declared here rather than imported, so that this module does not depend on the runtime
    that depends on it.
    """

    settings: Settings
    store: JobStore
    # Set when the worker process is shutting down: the attempt stops and is preempted.
    shutdown: threading.Event

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = ...) -> T:
        """Runs a store coroutine on the process's event loop and returns its result."""
        ...

    def wake(self, queue: str) -> None:
        """Sends a wake-up message so that some worker takes the next job of `queue`."""
        ...

    def abandon(self, reason: str) -> None:
        """Ends the worker process: a runner that will not return holds its thread for good."""
        ...


class JobExecution:
    """Runs one claimed attempt to its end and records the outcome, unless fenced off."""

    def __init__(self, runtime: JobRuntime, claim: Claim) -> None:
        self.runtime = runtime
        self.claim = claim
        self.stop_reason: str | None = None
        self._done = threading.Event()
        self._last_progress_log = 0.0
        self._last_progress: dict[str, Any] = {}
        self._progress: JobProgress | None = None
        self._job_type = "train"
        self.workdir = Path()
        # The state the attempt's end left the job in (None while running, or when fenced).
        self.job_state: str | None = None
        settings = runtime.settings
        # One store call: the client's timeout, its one retry, and a margin.
        self._call_timeout = 2 * settings.redis_timeout_seconds + 1
        self._last_report = time.monotonic()
        self._stop_requested_at: float | None = None
        # Kubernetes watches the pods of a multi-node attempt; the watchdog, the others.
        self._watched = True
        # Whoever ends the attempt first (its thread, or the watchdog) records its outcome.
        self._outcome_lock = threading.Lock()
        self._outcome_taken = False
        # Set once the runner returned: the lease is then only kept until the outcome is written.
        self._returned = False

    # Helpers running store calls on the runtime's loop.

    def _write(self, **kwargs: Any) -> None:
        try:
            held = self.runtime.call(
                self.runtime.store.write(self.claim, **kwargs), timeout=self._call_timeout
            )
        except Exception:
            log.warning("could not record an event of %s", self.claim.job_id, exc_info=True)
            return
        if not held:
            self._stop("fenced")

    def _stop(self, reason: str) -> None:
        if self.stop_reason is None:
            log.info("stopping %s: %s", self.claim.job_id, reason)
            self.stop_reason = reason
            self._stop_requested_at = time.monotonic()

    def should_stop(self) -> bool:
        return self.stop_reason is not None or self.runtime.shutdown.is_set()

    # The lease.

    def _keep_lease(self) -> None:
        unreachable_since: float | None = None
        while not self._done.wait(
            min(LEASE_CHECK_SECONDS, self.runtime.settings.heartbeat_seconds)
        ):
            if not self._returned and self._watch():
                return
            try:
                answer = self.runtime.call(
                    self.runtime.store.renew(self.claim), timeout=self._call_timeout
                )
            except Exception:
                if unreachable_since is None:
                    unreachable_since = time.monotonic()
                    log.warning(
                        "lease renewal of %s failed; the attempt goes on, and Redis's answer "
                        "once it is back decides",
                        self.claim.job_id,
                        exc_info=True,
                    )
                continue
            if unreachable_since is not None:
                log.info(
                    "Redis answers again after %.1f s: %s",
                    time.monotonic() - unreachable_since,
                    answer,
                )
                unreachable_since = None
            if self._returned:
                continue
            if answer == "CANCELLING":
                self._stop("cancel")
            elif answer == "DEADLINE":
                self._stop("deadline")
            elif answer == "FENCED":
                self._stop("fenced")

    # The watchdog.

    def _watch(self) -> bool:
        """Stops a stalled attempt; abandons one that did not stop within the grace. Returns
        True once the attempt is abandoned."""
        settings = self.runtime.settings
        now = time.monotonic()
        if not self._watched:
            return False
        timeout = settings.stall_timeout_seconds
        if timeout and now - self._last_report >= timeout:
            self._stop("stalled")
        asked = self._stop_requested_at
        if asked is None or now - asked < settings.stall_grace_seconds:
            return False
        if not self._take_outcome():
            return False
        reason = (
            f"the runner of attempt {self.claim.attempt} of {self.claim.job_id} did not stop "
            f"within {settings.stall_grace_seconds:.0f} s of being asked ({self.stop_reason})"
        )
        log.error("%s: ending the worker process", reason)
        if self.stop_reason != "fenced":
            self._record_outcome(None, {})
        self.runtime.abandon(reason)
        return True

    def _take_outcome(self) -> bool:
        """Whether the caller is the first to end the attempt (and must record its outcome)."""
        with self._outcome_lock:
            taken, self._outcome_taken = self._outcome_taken, True
        return not taken

    # Events from the ML core.

    def on_event(self, event: Event | dict[str, Any]) -> None:
        """Renders an event of the ML core (typed, or its wire shape from a pod's `run-job
        --events` and the launcher's cluster events) into the job's record, logs and events."""
        self._last_report = time.monotonic()
        event = as_dict(event) if not isinstance(event, dict) else event
        kind = event.get("type")
        prefix = f"[{event['family']} seed {event['seed']}] " if "family" in event else ""
        now_ms = int(time.time() * 1000)
        attempt = self.claim.attempt
        if kind == "progress" and event.get("phase", "train") != "train":
            phase = {
                "phase": event["phase"],
                "phaseDone": event.get("done"),
                "phaseTotal": event.get("total"),
            }
            progress = {**self._last_progress, **phase, "attempt": attempt, "updatedAt": now_ms}
            # A job-level phase (a compare job's exports, its report) belongs to no one run.
            progress.pop("run", None)
            if "family" in event:
                progress["run"] = f"{event['family']} seed {event['seed']}"
            self._last_progress = progress
            logs = []
            parsed = event_from_dict(event)
            if parsed and time.monotonic() - self._last_progress_log >= PROGRESS_LOG_SECONDS:
                self._last_progress_log = time.monotonic()
                logs.append(("info", describe(parsed)))
            self._write(fields={"progress": json.dumps(progress)}, logs=logs)
        elif kind == "progress" and self._progress is not None:
            before = self._progress.samples_seen
            progress = self._progress.of(event) | {
                "phase": "train",
                "attempt": attempt,
                "updatedAt": now_ms,
            }
            self._last_progress = progress
            if progress["samplesSeen"] > before:
                metrics.SAMPLES.labels(self._job_type).inc(progress["samplesSeen"] - before)
            logs = []
            due = time.monotonic() - self._last_progress_log >= PROGRESS_LOG_SECONDS
            if due or progress.get("percent") == 100.0:
                self._last_progress_log = time.monotonic()
                logs.append(("info", progress_line(progress)))
            self._write(fields={"progress": json.dumps(progress)}, logs=logs)
        elif kind == "metrics":
            values = event.get("metrics") or {}
            record = {"samplesSeen": event.get("samplesSeen"), "values": values}
            shown = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in list(values.items())[:8]
            )
            line = f"{prefix}metrics at {event.get('samplesSeen')} samples: {shown}"
            self._write(
                fields={"metrics": json.dumps(record | {"updatedAt": now_ms})},
                logs=[("info", line)],
            )
        elif kind == "artifact" and event.get("kind") == "checkpoint":
            samples = event.get("samplesSeen")
            if self._progress is not None and samples is not None:
                samples = self._progress.overall_samples(event)
            path = str(event.get("path", ""))
            workdir = str(self.workdir)
            record = {
                "step": event.get("step"),
                "samplesSeen": samples,
                "path": path.removeprefix(workdir + "/"),
                "attempt": attempt,
            }
            self._write(
                fields={"checkpoint": json.dumps(record)},
                events=[("info", "Checkpointed", f"{prefix}checkpoint at {samples} samples")],
            )
        elif kind == "log":
            self._write(
                logs=[(str(event.get("level", "info")), prefix + str(event.get("message")))]
            )
        elif kind == "cluster":  # the state of a multi-node job's Kubernetes pods
            level = "warning" if event.get("state") in ("RETRYING", "FAILED") else "info"
            cluster = {k: v for k, v in event.items() if k != "type"} | {"updatedAt": now_ms}
            self._write(
                fields={"cluster": json.dumps(cluster)},
                events=[(level, f"Cluster{event.get('reason')!s}", str(event.get("message")))],
            )
        else:
            self._write(logs=[("debug", prefix + json.dumps(event, default=str))])

    # The attempt.

    def run(self) -> None:
        runtime = self.runtime
        record = runtime.call(runtime.store.get(self.claim.job_id))
        if record is None:
            return
        spec = record.spec
        self._job_type = record.type
        metrics.job_started(record, self.claim.attempt)
        job_dir = AttemptsDir.of_job(runtime.settings.artifact_dir, record.id)
        started = time.monotonic()
        self._watched = not is_multi_node(spec)
        self._last_report = started
        lease = threading.Thread(target=self._keep_lease, name="vlarena-lease", daemon=True)
        lease.start()
        metrics.BUSY.set(1)
        error: Exception | None = None
        result: dict[str, Any] = {}
        try:
            self.workdir = job_dir.start(self.claim.attempt, owner=self.claim.token)
            self._write(fields={"workdir": str(self.workdir)})
            families = (
                _compare_families(spec)
                if record.type == "compare"
                else [spec.get("model", {}).get("family", "")]
            )
            self._progress = JobProgress(spec, families)
            if record.progress is not None:  # an earlier attempt's
                earlier = record.progress
                self._progress.carry_on_from(earlier.samples_seen, earlier.total_samples)
                self._last_progress = earlier.model_dump(
                    mode="json", by_alias=True, exclude_none=True
                )
            runner = functools.partial(
                JOB_RUNNERS[record.type],
                confinement=Confinement.from_settings(runtime.settings),
            )
            if is_multi_node(spec):
                from vlarena.worker.launcher import run_on_cluster

                runner = functools.partial(
                    run_on_cluster, runtime.settings, record.id, self.claim.attempt
                )
            result = runner(
                spec, self.workdir, on_event=self.on_event, should_stop=self.should_stop
            )
        except Exception as exc:
            error = exc
        finally:
            self._returned = True
            metrics.BUSY.set(0)
        # The lease is kept until the outcome is recorded: the final write may wait out an
        # outage of Redis, and the attempt must not look lost meanwhile.
        try:
            outcome = self._finish(record.type, error, result, job_dir)
        finally:
            self._done.set()
            lease.join(timeout=10)
        metrics.job_ended(record.type, outcome, self.job_state)
        metrics.ATTEMPT_DURATION.labels(record.type).observe(time.monotonic() - started)

    def _finish(
        self, job_type: str, error: Exception | None, result: dict[str, Any], job_dir: AttemptsDir
    ) -> str:
        if not self._take_outcome():
            # The watchdog gave up on the runner and recorded the attempt's end already.
            return "abandoned" if self.job_state else "fenced"
        if self.stop_reason == "fenced":
            log.warning(
                "attempt %d of %s lost its lease; its outcome is not recorded",
                self.claim.attempt,
                self.claim.job_id,
            )
            return "fenced"
        return self._record_outcome(error, result, job_dir)

    def _outcome(self, error: Exception | None) -> tuple[str, str, str | None]:
        """How the attempt ended: (outcome, message, error code) for `JobStore.finish`."""
        if self.stop_reason == "cancel":
            return "cancelled", "", None
        if self.stop_reason == "deadline":
            return "deadline", "", None
        if self.stop_reason == "stalled":
            seconds = self.runtime.settings.stall_timeout_seconds
            message = f"Stalled: no progress, log or event for {seconds:.0f} s; stopped"
            return "failed", message, "Stalled"
        if error is None:
            return "succeeded", "", None
        if self.runtime.shutdown.is_set():
            return "preempted", "", None
        if isinstance(error, UserInputError):
            # What the user sent cannot work: another attempt would fail the same way.
            message = " ".join(str(error).split())
            log.warning("job %s failed on its input: %s", self.claim.job_id, message)
            return "rejected", message, "InvalidInput"
        if isinstance(error, DeterministicFailure):
            message = " ".join(str(error).split())
            log.warning("job %s failed for good: %s", self.claim.job_id, message)
            return "deterministic", message, type(error).__name__
        log.error("job %s failed", self.claim.job_id, exc_info=error)
        return "failed", f"{type(error).__name__}: {error}", None

    def _record_outcome(
        self, error: Exception | None, result: dict[str, Any], job_dir: AttemptsDir | None = None
    ) -> str:
        """Writes how the attempt ended (retried until Redis answers); returns the outcome."""
        outcome, message, code = self._outcome(error)
        fields: dict[str, Any] = {"message": message, "code": code}
        if outcome == "succeeded":
            fields = {
                "result": result,
                "metrics": result.get("metrics", {}),
                "samples_seen": (self._progress.samples_seen or None) if self._progress else None,
                "models": [self._version(m) for m in result.get("models", [])],
            }
        finish = self._send_finish(outcome, fields)
        if finish.state == "FENCED":
            log.warning(
                "attempt %d of %s ended (%s) after it had lost the job; its outcome is not "
                "recorded",
                self.claim.attempt,
                self.claim.job_id,
                outcome,
            )
            return "fenced"
        self.job_state = finish.state
        if job_dir is not None:
            self._prune(finish.state, job_dir)
        if finish.wake_queue:
            self.runtime.wake(finish.wake_queue)
        return outcome

    def _send_finish(self, outcome: str, fields: dict[str, Any]) -> Finish:
        """`JobStore.finish`, sent again with a backoff until Redis answers (a finish that
        landed answers the same when sent again)."""
        wait, longest = FINISH_RETRY_SECONDS
        while True:
            try:
                return self.runtime.call(
                    self.runtime.store.finish(self.claim, outcome, **fields),
                    timeout=self._call_timeout,
                )
            except TRANSIENT_STORE_ERRORS as exc:
                log.warning(
                    "could not record the end of attempt %d of %s (%r); trying again in %.1f s",
                    self.claim.attempt,
                    self.claim.job_id,
                    exc,
                    wait,
                )
            time.sleep(wait)
            wait = min(2 * wait, longest)

    def _prune(self, state: str, job_dir: AttemptsDir) -> None:
        """Once the job has ended, however it ended, keeps only this attempt's directory: the
        others are copies made for retries (a failed job would keep one per attempt)."""
        if state in TERMINAL_STATES and self.workdir != Path():
            job_dir.prune(keep=self.workdir)

    def _version(self, model: dict[str, Any]) -> RegisteredVersion:
        path = (self.workdir / str(model.get("path", ""))).resolve()
        ready = path.exists()
        return RegisteredVersion(
            name=registry_name(str(model.get("name", ""))),
            family=str(model.get("family", "")),
            path=str(path),
            metrics=dict(model.get("metrics") or {}),
            status="READY" if ready else "FAILED",
            status_message=None if ready else f"training reported {path}, which does not exist",
        )
