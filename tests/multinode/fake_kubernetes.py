"""A local HTTP server that speaks the Kubernetes API's JSON for the calls the launcher makes
(create Jobs and Services, read and delete Jobs, watch Pods, read a Pod's log), records every
call, and plays a scripted sequence of pod states: each watch request gets the next step's
changes as watch events."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class Step:
    """The pods (and the Job's status) at one point of the script."""

    pods: list[dict[str, Any]]
    job_status: dict[str, Any]


def pod(job: str, index: int, phase: str, *, attempt: int = 0, **status: Any) -> dict[str, Any]:
    """A pod of indexed Job `job` in `phase`; `attempt` tells a replacement pod apart."""
    name = f"{job}-{index}-{'abcde'[attempt % 5]}x{attempt}"
    body: dict[str, Any] = {"phase": phase, **status}
    if phase in ("Running", "Succeeded", "Failed"):
        body.setdefault("conditions", [{"type": "PodScheduled", "status": "True"}])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"vlarena.dev/cluster-job": job, COMPLETION_INDEX: str(index)},
            "annotations": {COMPLETION_INDEX: str(index)},
        },
        "status": body,
    }


def unschedulable(job: str, index: int) -> dict[str, Any]:
    return pod(
        job,
        index,
        "Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            }
        ],
    )


def failed(job: str, index: int, *, attempt: int = 0) -> dict[str, Any]:
    return pod(
        job,
        index,
        "Failed",
        attempt=attempt,
        containerStatuses=[
            {"name": "trainer", "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
        ],
    )


def condition(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"conditions": [{"type": kind, "status": "True", "reason": reason, "message": message}]}


class FakeKubernetes:
    """The API server of the tests. `script` plays once; its last step then holds."""

    def __init__(
        self,
        script: list[Step],
        *,
        logs: dict[str, str] | None = None,
        on_job_created: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.script = script
        self.logs = logs or {}
        self.on_job_created = on_job_created
        self.calls: list[Call] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.step = -1
        self.version = 100
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeKubernetes:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, directory: Path, namespace: str = "ml-training") -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "worker", "user": {"token": "fake-token"}}],
                    "contexts": [
                        {
                            "name": "fake",
                            "context": {
                                "cluster": "fake",
                                "user": "worker",
                                "namespace": namespace,
                            },
                        }
                    ],
                    "current-context": "fake",
                }
            )
        )
        return path

    def verbs(self) -> list[tuple[str, str, str]]:
        """Each recorded call as (method, path, watch?) for easy assertions."""
        return [(c.method, c.path, c.query.get("watch", "")) for c in self.calls]

    # Serving.

    def _pods_at(self, step: int) -> dict[str, dict[str, Any]]:
        if step < 0:
            return {}
        return {p["metadata"]["name"]: p for p in self.script[step].pods}

    def _watch_events(self) -> list[dict[str, Any]]:
        with self.lock:
            if self.step + 1 >= len(self.script):
                return []
            before, self.step = self._pods_at(self.step), self.step + 1
            after = self._pods_at(self.step)
        events = []
        for name, obj in after.items():
            if before.get(name) != obj:
                events.append(("ADDED" if name not in before else "MODIFIED", obj))
        events += [("DELETED", obj) for name, obj in before.items() if name not in after]
        out = []
        for kind, obj in events:
            self.version += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.version)
            out.append({"type": kind, "object": obj})
        return out

    def _job(self, name: str) -> dict[str, Any] | None:
        job = self.jobs.get(name)
        if job is None:
            return None
        job = copy.deepcopy(job)
        job["status"] = copy.deepcopy(self.script[max(self.step, 0)].job_status)
        return job

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any, content_type: str = "application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._reply(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": reason,
                        "message": message,
                        "code": code,
                    },
                )

            def _handle(self, method: str) -> None:
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.calls.append(Call(method, url.path, query, body))
                parts = url.path.strip("/").split("/")
                # /api/v1/namespaces/{ns}/{resource}[/{name}[/log]]
                # /apis/batch/v1/namespaces/{ns}/jobs[/{name}]
                tail = parts[parts.index("namespaces") + 2 :]
                resource, name = tail[0], (tail[1] if len(tail) > 1 else None)
                if resource == "jobs":
                    self._jobs(method, name, body)
                elif resource == "services" and method == "POST":
                    self._create(fake.services, body)
                elif resource == "pods" and name is None and query.get("watch") == "true":
                    self._watch()
                elif resource == "pods" and tail[-1] == "log":
                    text = fake.logs.get(name, "")
                    self._reply(200, text.encode(), "text/plain")
                else:
                    self._status(405, "MethodNotAllowed", f"{method} {url.path}")

            def _create(self, store: dict[str, Any], body: dict[str, Any]) -> None:
                name = body["metadata"]["name"]
                if name in store:
                    self._status(409, "AlreadyExists", f"{name} already exists")
                    return
                created = copy.deepcopy(body)
                created["metadata"]["uid"] = f"uid-{name}"
                store[name] = created
                self._reply(201, created)

            def _jobs(self, method: str, name: str | None, body: Any) -> None:
                if method == "POST":
                    self._create(fake.jobs, body)
                    if fake.on_job_created is not None:
                        fake.on_job_created(body)
                    return
                job = fake._job(name or "")
                if job is None:
                    self._status(404, "NotFound", f'jobs.batch "{name}" not found')
                elif method == "GET":
                    self._reply(200, job)
                elif method == "DELETE":
                    del fake.jobs[name]
                    self._reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

            def _watch(self) -> None:
                events = fake._watch_events()
                if not events:
                    time.sleep(0.05)  # a real watch would wait this out; keep the loop calm
                data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
                self._reply(200, data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        return Handler
