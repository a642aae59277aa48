"""The chart's pods run with podman as `helm template` renders them, and probed as the kubelet probes them.

One podman pod stands for the cluster network: every rendered Service name resolves to it (as
host entries), so each container reaches the others at the addresses the chart gives it. Each
container starts with the image, command, args, environment, user and groups, read-only root,
capabilities and volumes of its rendered spec; resources and scheduling are not applied.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The kubelet's default permissions of an emptyDir (before fsGroup adds its group).
EMPTY_DIR_MODE = 0o777
PULL_POLICIES = {"IfNotPresent": "missing", "Always": "always", "Never": "never"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


@dataclass
class Started:
    """A running container: its pod and container spec, its podman name, and when it started."""

    name: str
    workload: dict[str, Any]
    spec: dict[str, Any]
    started: float
    startup_seconds: float | None = None

    @property
    def pod(self) -> dict[str, Any]:
        return pod_template(self.workload)

    def port(self, name_or_number: str | int) -> int:
        """The containerPort a probe or a caller names."""
        if isinstance(name_or_number, int):
            return name_or_number
        for port in self.spec.get("ports", []):
            if port["name"] == name_or_number:
                return int(port["containerPort"])
        raise KeyError(f"{self.spec['name']} has no port named {name_or_number}")


@dataclass
class Cluster:
    """A podman pod holding the chart's containers, with their volumes under `workdir`."""

    objects: list[dict[str, Any]]
    workdir: Path
    namespace: str
    env: dict[str, str]
    name: str = field(default_factory=lambda: f"vlarena-images-{os.getpid()}")
    published: dict[int, int] = field(default_factory=dict)
    running: list[Started] = field(default_factory=list)

    def podman(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        result = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:3])} …: {result.stderr.strip()}")
        return result.stdout

    def find(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise KeyError(f"the chart rendered no {kind} {name}")

    def create(self, workloads: list[dict[str, Any]]) -> None:
        """The pod, publishing every container port of `workloads` on 127.0.0.1."""
        argv = ["pod", "create", "--name", self.name]
        for service in (o for o in self.objects if o["kind"] == "Service"):
            argv += ["--add-host", f"{service['metadata']['name']}:127.0.0.1"]
        for workload in workloads:
            for container in pod_template(workload)["containers"]:
                for port in container.get("ports", []):
                    number = int(port["containerPort"])
                    self.published[number] = free_port()
                    argv += ["--publish", f"127.0.0.1:{self.published[number]}:{number}"]
        self.podman(*argv)

    def url(self, container_port: int, path: str = "") -> str:
        return f"http://127.0.0.1:{self.published[container_port]}{path}"

    # Volumes.

    def _volume_dir(self, workload: dict[str, Any], volume: dict[str, Any]) -> Path:
        pod_name = workload["metadata"]["name"]
        fs_group = pod_template(workload).get("securityContext", {}).get("fsGroup")
        if "persistentVolumeClaim" in volume:
            path = self.workdir / "claims" / volume["persistentVolumeClaim"]["claimName"]
        else:
            path = self.workdir / "pods" / pod_name / volume["name"]
        if path.exists():
            return path
        path.mkdir(parents=True)
        if "secret" in volume or "configMap" in volume:
            self._project(volume, path, fs_group)
            return path
        # What the kubelet does for a volume of a pod with an fsGroup: the group owns it, with
        # the setgid bit so that what containers create there stays the group's.
        mode = EMPTY_DIR_MODE if "emptyDir" in volume else 0o775
        if fs_group is not None:
            os.chown(path, 0, fs_group)
            mode |= 0o2070
        path.chmod(mode)
        return path

    def _project(self, volume: dict[str, Any], path: Path, fs_group: int | None) -> None:
        """A secret or configMap volume: one file per key, with the volume's mode."""
        if "secret" in volume:
            source = self.find("Secret", volume["secret"]["secretName"])
            data = {k: base64.b64decode(v) for k, v in (source.get("data") or {}).items()}
            data |= {k: v.encode() for k, v in (source.get("stringData") or {}).items()}
            mode = volume["secret"].get("defaultMode", 0o644)
        else:
            source = self.find("ConfigMap", volume["configMap"]["name"])
            data = {k: v.encode() for k, v in (source.get("data") or {}).items()}
            mode = volume["configMap"].get("defaultMode", 0o644)
        for key, value in data.items():
            file = path / key
            file.write_bytes(value)
            file.chmod(mode)
            if fs_group is not None:
                os.chown(file, 0, fs_group)
        path.chmod(0o755)

    def _mounts(self, workload: dict[str, Any], container: dict[str, Any]) -> list[str]:
        spec = pod_template(workload)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for claim in workload["spec"].get("volumeClaimTemplates", []):
            claim_name = f"{claim['metadata']['name']}-{workload['metadata']['name']}-0"
            volumes[claim["metadata"]["name"]] = {
                "name": claim["metadata"]["name"],
                "persistentVolumeClaim": {"claimName": claim_name},
            }
        argv = []
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            read_only = mount.get("readOnly", False) or "secret" in volume or "configMap" in volume
            if volume.get("emptyDir", {}).get("medium") == "Memory":
                size = volume["emptyDir"].get("sizeLimit", "64Mi").replace("i", "")
                argv += [
                    "--mount",
                    f"type=tmpfs,destination={mount['mountPath']},tmpfs-size={size}",
                ]
                continue
            source = self._volume_dir(workload, volume)
            options = "ro" if read_only else "rw"
            argv += ["--volume", f"{source}:{mount['mountPath']}:{options}"]
        return argv

    # Containers.

    def _env(self, container: dict[str, Any]) -> list[str]:
        """`--env` for each variable; a later entry of the same name wins, as in Kubernetes."""
        values: dict[str, str] = {}
        for entry in container.get("env", []):
            if "value" in entry:
                values[entry["name"]] = str(entry["value"])
                continue
            source = entry["valueFrom"]
            if "fieldRef" in source:
                field_path = source["fieldRef"]["fieldPath"]
                assert field_path == "metadata.namespace", field_path
                values[entry["name"]] = self.namespace
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.find("Secret", ref["name"])
                values[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            else:
                raise ValueError(f"unsupported env source {source}")
        return [f"--env={name}={value}" for name, value in values.items()]

    def _security(self, workload: dict[str, Any], container: dict[str, Any]) -> list[str]:
        pod = pod_template(workload).get("securityContext", {})
        ctx = {**pod, **container.get("securityContext", {})}
        argv = []
        if "runAsUser" in ctx:
            user = str(ctx["runAsUser"])
            if "runAsGroup" in ctx:
                user += f":{ctx['runAsGroup']}"
            argv += ["--user", user]
        for group in [*pod.get("supplementalGroups", []), pod.get("fsGroup")]:
            if group is not None:
                argv += ["--group-add", str(group)]
        if ctx.get("readOnlyRootFilesystem"):
            # podman would add writable tmpfs mounts of its own; the pod has only its volumes.
            argv += ["--read-only", "--read-only-tmpfs=false"]
        if ctx.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges"]
        for cap in ctx.get("capabilities", {}).get("drop", []):
            argv += ["--cap-drop", cap]
        for cap in ctx.get("capabilities", {}).get("add", []):
            argv += ["--cap-add", cap]
        return argv

    def start(
        self, workload: dict[str, Any], container_name: str, image: str | None = None
    ) -> Started:
        """Starts one container of a rendered workload (with `image` in place of the rendered
        one, for stand-ins of images that cannot be pulled here)."""
        spec = next(c for c in pod_template(workload)["containers"] if c["name"] == container_name)
        name = f"{self.name}-{workload['metadata']['name']}-{container_name}"
        argv = ["run", "--detach", "--pod", self.name, "--name", name]
        argv += ["--pull", PULL_POLICIES[spec.get("imagePullPolicy", "IfNotPresent")]]
        argv += self._security(workload, spec) + self._env(spec) + self._mounts(workload, spec)
        if "command" in spec:
            argv += ["--entrypoint", json.dumps(spec["command"])]
        argv.append(image or spec["image"])
        argv += [str(a) for a in spec.get("args", [])]
        started = time.monotonic()
        self.podman(*argv)
        running = Started(name, workload, spec, started)
        self.running.append(running)
        return running

    def logs(self, container: Started, tail: int = 60) -> str:
        result = subprocess.run(
            ["podman", "logs", "--tail", str(tail), container.name],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout + result.stderr

    def exec(
        self, container: Started, *argv: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", "exec", container.name, *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def alive(self, container: Started) -> bool:
        state = self.podman("inspect", "--format", "{{.State.Running}}", container.name)
        return state.strip() == "true"

    # Probes.

    def probe(self, container: Started, kind: str) -> bool:
        """One call of the container's `kind` probe (startupProbe, livenessProbe, ...) with its
        timeout; True when it passes. A container without that probe passes."""
        spec = container.spec.get(kind)
        if spec is None:
            return True
        timeout = spec.get("timeoutSeconds", 1)
        if "httpGet" in spec:
            port = container.port(spec["httpGet"]["port"])
            try:
                with urllib.request.urlopen(
                    self.url(port, spec["httpGet"].get("path", "/")), timeout=timeout
                ) as response:
                    return 200 <= response.status < 400
            except (urllib.error.URLError, OSError):
                return False
        if "exec" in spec:
            try:
                return (
                    self.exec(container, *spec["exec"]["command"], timeout=timeout).returncode == 0
                )
            except subprocess.TimeoutExpired:
                return False
        raise ValueError(f"unsupported probe {spec}")

    def wait_started(self, container: Started) -> float:
        """Waits as long as the first probe the kubelet runs allows (failureThreshold ×
        periodSeconds, polled more often than the kubelet would), then checks liveness and
        readiness; the seconds from `podman run` to the first pass. A container without probes
        counts as started while it keeps running."""
        kind = next(
            (k for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in container.spec),
            None,
        )
        spec = container.spec.get(kind, {}) if kind else {"periodSeconds": 1, "failureThreshold": 2}
        allowed = spec.get("initialDelaySeconds", 0) + spec.get("periodSeconds", 10) * spec.get(
            "failureThreshold", 3
        )
        deadline = container.started + allowed
        while kind is None or not self.probe(container, kind):
            if not self.alive(container):
                raise RuntimeError(f"{container.name} exited:\n{self.logs(container)}")
            if time.monotonic() > deadline:
                if kind is None:
                    break
                raise TimeoutError(
                    f"{container.name} did not start within the {allowed} s its {kind} allows:\n"
                    f"{self.logs(container)}"
                )
            time.sleep(0.25)
        container.startup_seconds = time.monotonic() - container.started
        for other in ("livenessProbe", "readinessProbe"):
            if not self.probe(container, other):
                raise RuntimeError(f"{container.name}: its {other} fails:\n{self.logs(container)}")
        return container.startup_seconds

    def remove(self) -> None:
        self.podman("pod", "rm", "--force", "--time", "10", self.name, check=False, timeout=300)


@contextlib.contextmanager
def cluster(
    objects: list[dict[str, Any]], workdir: Path, namespace: str, containers_conf: Path
) -> Iterator[Cluster]:
    env = {**os.environ, "CONTAINERS_CONF": str(containers_conf)}
    if shutil.which("podman") is None:
        raise RuntimeError("podman is not installed")
    running = Cluster(objects, workdir, namespace, env)
    try:
        yield running
    finally:
        running.remove()
