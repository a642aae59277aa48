"""The Kubernetes Job launcher: runs a multi-node train job as an indexed Job and follows it.

One cluster attempt is one Job (`<job id>-<attempt>`) plus its headless Service. The launcher
creates both, watches the pods, reports their state as `cluster` events (QUEUED while pods wait
to be placed, RUNNING once every node runs, RETRYING after a pod failure the Job's backoff
covers, SUCCEEDED, FAILED with the reason), follows rank 0's log into the job's log store (its
JSON lines are the trainer's progress events), and deletes the Job, with its pods and Service,
when the attempt ends for any reason. When the worker itself is lost, the reaper of a Kubernetes
worker deletes the Jobs of the lost attempt (`delete_attempt_jobs`), whether the job is retried
or has ended. The API calls it makes are exactly those the chart's
worker Role allows: Jobs create/get/delete, Services create, Pods watch, Pods/log get.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from vlarena.errors import UserInputError
from vlarena.events import Event, Level, LogEvent
from vlarena.files import write_json
from vlarena.rundirs import JobDir
from vlarena.settings import Settings
from vlarena.worker.k8s_templates import (
    CLUSTER_JOB_LABEL,
    COMPLETION_INDEX,
    CONTAINER,
    cluster_job_name,
    render_job,
    render_service,
)

if TYPE_CHECKING:
    from urllib3 import HTTPResponse

log = logging.getLogger(__name__)

# Typed events of the launcher, and rank 0's events and the pods' cluster state as wire dicts.
OnEvent = Callable[[Event | dict[str, Any]], None]
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# How long the attempt waits, once the Job has ended, for rank 0's log to be read to its end.
LOG_DRAIN_SECONDS = 30.0


class ClusterUnavailable(UserInputError):
    """A multi-node job reached a worker that cannot launch Kubernetes Jobs."""


class ClusterJobFailed(RuntimeError):
    """The Kubernetes Job failed, or could not be placed; the message says why."""


class ClusterJobStopped(RuntimeError):
    """The attempt was asked to stop (cancel, deadline, worker shutdown); its Job is deleted."""


@dataclass(frozen=True)
class ClusterStatus:
    """What the pods of one cluster attempt amount to, in the job platform's terms."""

    state: str  # QUEUED, RUNNING, RETRYING, SUCCEEDED or FAILED
    reason: str
    message: str
    pods: dict[str, int] = field(default_factory=dict)
    partially_scheduled: bool = False

    def event(self, name: str, namespace: str) -> dict[str, Any]:
        return {
            "type": "cluster",
            "state": self.state,
            "reason": self.reason,
            "message": self.message,
            "pods": self.pods,
            "name": name,
            "namespace": namespace,
        }


def _true_conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conditions if c.get("status") == "True"}


def _scheduled(pod: dict[str, Any]) -> bool:
    if (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed"):
        return True
    return "PodScheduled" in _true_conditions(pod)


def _unscheduled_reason(pods: Iterable[dict[str, Any]]) -> str:
    for pod in pods:
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                return f"{c.get('reason', 'Unschedulable')}: {c.get('message', '')}".strip()
    return ""


def _failure_of(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        ended = (container.get("state") or {}).get("terminated")
        if ended:
            return f"{ended.get('reason', 'Error')}, exit code {ended.get('exitCode')}"
    return status.get("reason") or status.get("message") or "failed"


def pod_index(pod: dict[str, Any]) -> int | None:
    """The completion index (node rank) of a pod of an indexed Job."""
    metadata = pod.get("metadata") or {}
    value = (metadata.get("annotations") or {}).get(COMPLETION_INDEX)
    value = value if value is not None else (metadata.get("labels") or {}).get(COMPLETION_INDEX)
    return int(value) if value is not None else None


def cluster_status(
    job: dict[str, Any], pods: Iterable[dict[str, Any]], nodes: int
) -> ClusterStatus:
    """Maps a Job and its pods to a platform state."""
    pods = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    phases = [(p.get("status") or {}).get("phase", "Pending") for p in pods]
    counts = {phase: phases.count(phase) for phase in sorted(set(phases))}
    conditions = _true_conditions(job)
    status = job.get("status") or {}
    if "Complete" in conditions:
        return ClusterStatus("SUCCEEDED", "Completed", f"all {nodes} pods completed", counts)
    failed_pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    last_failure = (
        f"; pod {failed_pods[-1]['metadata']['name']}: {_failure_of(failed_pods[-1])}"
        if failed_pods
        else ""
    )
    failed = conditions.get("Failed")
    if failed:
        reason = failed.get("reason") or "Failed"
        message = failed.get("message") or "the Job failed"
        return ClusterStatus("FAILED", reason, f"{reason}: {message}{last_failure}", counts)
    if (job.get("spec") or {}).get("suspend"):
        return ClusterStatus("QUEUED", "Suspended", "waiting for admission (Kueue)", counts)
    live = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Failed",)]
    running = sum(1 for p in live if p["status"].get("phase") in ("Running", "Succeeded"))
    if running >= nodes:
        return ClusterStatus("RUNNING", "Running", f"all {nodes} pods running", counts)
    failures = int(status.get("failed") or len(failed_pods))
    scheduled = sum(1 for p in live if _scheduled(p))
    partial = 0 < scheduled < nodes
    waiting = _unscheduled_reason(live)
    placed = f"{scheduled} of {nodes} pods placed" + (f"; {waiting}" if waiting else "")
    if failures:
        limit = (job.get("spec") or {}).get("backoffLimit")
        return ClusterStatus(
            "RETRYING",
            "PodFailed",
            f"{failures} pod failure(s) of {limit} allowed{last_failure}; restarting from the "
            f"last checkpoint ({placed})",
            counts,
            partial,
        )
    return ClusterStatus("QUEUED", "PodsPending", placed, counts, partial)


def _namespace(settings: Settings) -> str:
    if settings.kubernetes_namespace:
        return settings.kubernetes_namespace
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    from kubernetes import config

    path = str(settings.kubernetes_kubeconfig) if settings.kubernetes_kubeconfig else None
    _, active = config.list_kube_config_contexts(config_file=path)
    return active["context"].get("namespace") or "default"


def api_client(settings: Settings) -> Any:
    """A client of the cluster: in-cluster config in a pod, else the kubeconfig."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if settings.kubernetes_kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        path = str(settings.kubernetes_kubeconfig) if settings.kubernetes_kubeconfig else None
        config.load_kube_config(config_file=path, client_configuration=configuration)
    return client.ApiClient(configuration)


class ClusterLauncher:
    """Runs one cluster attempt of a multi-node job to its end."""

    def __init__(self, settings: Settings, api: Any | None = None) -> None:
        from kubernetes import client

        self.settings = settings
        self.api = api or api_client(settings)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.namespace = _namespace(settings)

    # The API calls.

    def _create(self, create: Callable[..., Any], body: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            return json.loads(create(self.namespace, body, _preload_content=False).data)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # Already there: created by this attempt before a lost reply; follow it.
            log.info("%s %s exists; following it", body["kind"], body["metadata"]["name"])
            return body

    def read_job(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            # Without preloading the client returns the raw response, not the V1Job it declares.
            reply = cast(
                "HTTPResponse",
                self.batch.read_namespaced_job(name, self.namespace, _preload_content=False),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(reply.data)

    def delete_job(self, name: str) -> bool:
        """Deletes a Job with its pods and Service (foreground propagation); False if absent."""
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.delete_namespaced_job(
                name, self.namespace, body=V1DeleteOptions(propagation_policy="Foreground")
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _watch_pods(self, name: str, resource_version: str | None) -> Iterable[dict[str, Any]]:
        from kubernetes import watch

        kwargs: dict[str, Any] = {
            "label_selector": f"{CLUSTER_JOB_LABEL}={name}",
            "timeout_seconds": self.settings.kubernetes_watch_seconds,
            "deserialize": False,
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        return watch.Watch().stream(self.core.list_namespaced_pod, self.namespace, **kwargs)

    # One attempt.

    def run(
        self,
        job_id: str,
        attempt: int,
        spec: dict[str, Any],
        workdir: Path,
        *,
        on_event: OnEvent,
        should_stop: Callable[[], bool],
    ) -> dict[str, Any]:
        """Launches the attempt, follows it to its end and returns the trainer's result."""
        name = cluster_job_name(job_id, attempt)
        resources = spec.get("resources") or {}
        nodes = int(resources.get("nodes", 1))
        # An earlier attempt whose worker was lost may still run: it would train beside this one.
        for earlier in range(1, attempt):
            if self.delete_job(cluster_job_name(job_id, earlier)):
                on_event(_log(f"deleted the Kubernetes Job of attempt {earlier}, still running"))
        workdir.mkdir(parents=True, exist_ok=True)
        write_json(JobDir(workdir).spec, spec)
        job = self._create(
            self.batch.create_namespaced_job,
            render_job(job_id, attempt, spec, workdir, self.settings),
        )
        service = render_service(job_id, attempt, self.settings)
        uid = (job.get("metadata") or {}).get("uid")
        if uid:
            # Owned by the Job: deleting the Job deletes the Service.
            service["metadata"]["ownerReferences"] = [
                {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}
            ]
        self._create(self.core.create_namespaced_service, service)
        gpus = int(resources.get("gpus", 0))
        on_event(
            _log(
                f"launched Kubernetes Job {self.namespace}/{name}: {nodes} nodes"
                + (f" × {gpus} GPUs" if gpus else "")
            )
        )
        logs = RankZeroLog(self, name, on_event)
        try:
            self._follow(name, nodes, logs, on_event, should_stop)
            logs.drain(LOG_DRAIN_SECONDS)
        finally:
            self.delete_job(name)
            logs.drain(LOG_DRAIN_SECONDS)
        result = JobDir(workdir).job_result
        if not result.exists():
            raise ClusterJobFailed(f"the Kubernetes Job completed but left no {result}")
        return json.loads(result.read_text())

    def _follow(
        self,
        name: str,
        nodes: int,
        logs: RankZeroLog,
        on_event: OnEvent,
        should_stop: Callable[[], bool],
    ) -> None:
        from kubernetes.client.exceptions import ApiException

        pods: dict[str, dict[str, Any]] = {}
        resource_version: str | None = None
        shown: tuple[str, str] | None = None
        partial_since: float | None = None
        limit = self.settings.kubernetes_partial_scheduling_seconds
        while True:
            try:
                for event in self._watch_pods(name, resource_version):
                    pod = event["object"]
                    resource_version = pod["metadata"].get("resourceVersion") or resource_version
                    if event["type"] == "DELETED":
                        pods.pop(pod["metadata"]["name"], None)
                    else:
                        pods[pod["metadata"]["name"]] = pod
                        logs.offer(pod)
                    if should_stop():
                        break
            except ApiException as exc:
                if exc.status != 410:
                    raise
                pods, resource_version = {}, None  # expired: list afresh
            if should_stop():
                raise ClusterJobStopped("stopped; the Kubernetes Job is deleted")
            job = self.read_job(name)
            if job is None:
                raise ClusterJobFailed(f"the Kubernetes Job {name} was deleted outside vlarena")
            status = cluster_status(job, pods.values(), nodes)
            if (status.state, status.message) != shown:
                shown = (status.state, status.message)
                on_event(status.event(name, self.namespace))
            if status.state == "SUCCEEDED":
                return
            if status.state == "FAILED":
                raise ClusterJobFailed(status.message)
            now = time.monotonic()
            partial_since = (partial_since or now) if status.partially_scheduled else None
            if partial_since is not None and now - partial_since >= limit:
                message = (
                    f"pods stayed partially scheduled for {limit:.0f} s "
                    f"(VLARENA_KUBERNETES_PARTIAL_SCHEDULING_SECONDS): {status.message}"
                )
                on_event(
                    ClusterStatus("FAILED", "Unschedulable", message).event(name, self.namespace)
                )
                raise ClusterJobFailed(message)


def _log(message: str, level: Level = "info") -> LogEvent:
    return LogEvent(message, level)


class RankZeroLog:
    """Follows the log of each pod of index 0 (rank 0) on a thread, line by line, to its end.

    JSON lines are the trainer's events (progress, metrics, checkpoints); other lines (torchrun's
    own, tracebacks) become log lines. A replaced pod's log is followed from its start.
    """

    def __init__(self, launcher: ClusterLauncher, name: str, on_event: OnEvent) -> None:
        self.launcher = launcher
        self.name = name
        self.on_event = on_event
        self.followed: set[str] = set()
        self.threads: list[threading.Thread] = []

    def offer(self, pod: dict[str, Any]) -> None:
        """Starts following `pod` if it is rank 0's and its container has started."""
        pod_name = pod["metadata"]["name"]
        phase = (pod.get("status") or {}).get("phase")
        if pod_index(pod) != 0 or pod_name in self.followed:
            return
        if phase not in ("Running", "Succeeded", "Failed"):
            return
        self.followed.add(pod_name)
        thread = threading.Thread(
            target=self._follow, args=(pod_name,), name=f"vlarena-log-{pod_name}", daemon=True
        )
        self.threads.append(thread)
        thread.start()

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _follow(self, pod_name: str) -> None:
        try:
            # Without preloading the client returns the raw response, not the str it declares.
            reply = cast(
                "HTTPResponse",
                self.launcher.core.read_namespaced_pod_log(
                    pod_name,
                    self.launcher.namespace,
                    container=CONTAINER,
                    follow=True,
                    _preload_content=False,
                ),
            )
            pending = b""
            for chunk in reply.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._line(line.decode("utf-8", "replace"))
            if pending:
                self._line(pending.decode("utf-8", "replace"))
        except Exception as exc:
            log.warning("could not follow the log of %s", pod_name, exc_info=True)
            self.on_event(_log(f"lost the log of pod {pod_name}: {exc}", "warning"))

    def _line(self, text: str) -> None:
        text = text.rstrip()
        if not text:
            return
        if text.startswith("{"):
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                event = None
            if isinstance(event, dict) and "type" in event:
                self.on_event(event)
                return
        self.on_event(_log(f"[rank 0] {text}"))


def delete_attempt_jobs(
    settings: Settings, job_id: str, last_attempt: int, api: Any | None = None
) -> list[str]:
    """Deletes the Kubernetes Jobs (with their pods and Services) of attempts 1 to
    `last_attempt` of a job; returns the names of those that were there."""
    launcher = ClusterLauncher(settings, api)
    names = [cluster_job_name(job_id, n) for n in range(1, last_attempt + 1)]
    return [name for name in names if launcher.delete_job(name)]


def run_on_cluster(
    settings: Settings,
    job_id: str,
    attempt: int,
    spec: dict[str, Any],
    workdir: Path,
    *,
    on_event: OnEvent,
    should_stop: Callable[[], bool],
    api: Any | None = None,
) -> dict[str, Any]:
    """Runs a multi-node job's attempt on Kubernetes; raises ClusterUnavailable where it cannot."""
    nodes = int((spec.get("resources") or {}).get("nodes", 1))
    if not settings.kubernetes_enabled:
        raise ClusterUnavailable(
            f"resources.nodes is {nodes}: multi-node jobs run as Kubernetes Jobs, and this "
            "worker does not launch them; start workers with VLARENA_KUBERNETES_ENABLED=true "
            "(the chart's worker.kubernetes.enabled) or submit the job with nodes: 1"
        )
    if not settings.kubernetes_image:
        raise ClusterUnavailable(
            "VLARENA_KUBERNETES_IMAGE is not set: the worker needs the training pods' image"
        )
    launcher = ClusterLauncher(settings, api)
    return launcher.run(job_id, attempt, spec, workdir, on_event=on_event, should_stop=should_stop)
