"""A local NVIDIA Triton: the `nvidia-pytriton` wheel's `tritonserver` (python backend only) run
as a child process on loopback ports, in explicit model-control mode over a model repository."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

STUB_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


class TritonError(RuntimeError):
    """The local Triton could not be started or did not become ready."""


def pytriton_root() -> Path:
    """The `tritonserver` tree inside the installed `nvidia-pytriton` wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonError("the local Triton needs the package nvidia-pytriton (run `make setup`)")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise TritonError(f"{root}: no bin/tritonserver in the nvidia-pytriton wheel")
    return root


def prepare_backends(directory: Path) -> Path:
    """A backend directory holding the python backend: its library and utilities from the wheel,
    and a symlink to the stub built for this Python (a copy fails to find its libraries)."""
    root = pytriton_root()
    target = directory / "python"
    target.mkdir(parents=True, exist_ok=True)
    links = {
        "libtriton_python.so": root / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": root
        / "backends"
        / "python"
        / "triton_python_backend_utils.py",
        "triton_python_backend_stub": root
        / "python_backend_stubs"
        / STUB_PYTHON
        / "triton_python_backend_stub",
    }
    for name, source in links.items():
        if not source.exists():
            raise TritonError(f"the nvidia-pytriton wheel lacks {source}")
        link = target / name
        if link.is_symlink() and link.resolve() == source.resolve():
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    return directory


def server_environment() -> dict[str, str]:
    """The environment the server and its python-backend stubs need.

    The stub links against libpython: on a Python that is not the system's own build it must
    find the running interpreter's, or every model fails to load. The stub runs the `python3`
    first on PATH, so this interpreter's bin directory goes first.
    """
    env = os.environ.copy()
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p
    )
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalTriton:
    """One `tritonserver` process; ports chosen free when given as 0.

    Use as a context manager, or `start()` / `stop()`. `grpc_url` is what tritonclient takes.
    """

    def __init__(
        self,
        repository: Path,
        *,
        host: str = "127.0.0.1",
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        load_models: Sequence[str] = (),
        workdir: Path | None = None,
        log_verbose: int = 0,
    ) -> None:
        self.repository = Path(repository)
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.load_models = list(load_models)
        self.workdir = (
            Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="vlarena-triton-"))
        )
        self.log_verbose = log_verbose
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        return self.workdir / "tritonserver.log"

    def command(self) -> list[str]:
        backends = prepare_backends(self.workdir / "backends")
        cmd = [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--strict-readiness=false",
            "--exit-timeout-secs=5",
            f"--log-verbose={self.log_verbose}",
        ]
        cmd += [f"--load-model={name}" for name in self.load_models]
        return cmd

    def start(self, timeout: float = 60.0) -> LocalTriton:
        """Starts the server and waits until it answers as live and ready."""
        self.repository.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=server_environment(),
                cwd=self.workdir,
                start_new_session=True,  # its python-backend stubs stop with it, as one group
            )
        log.info(
            "tritonserver pid %d, gRPC %s, log %s", self.process.pid, self.grpc_url, self.log_path
        )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise TritonError(
                    f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2) as reply,
            ):
                if reply.status == 200:
                    return
            time.sleep(0.2)
        raise TritonError(f"tritonserver not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Triton unloads its models and stops its stubs), then SIGKILL the group."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver %d did not stop in %.0f s; killing it", process.pid, timeout)
        # Whatever of its group is left (a stub that missed the shutdown) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
