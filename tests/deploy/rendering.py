"""The deployment tests' shared pieces: the tools `make deploy-tools` installs, and the chart
rendered once per distinct set of values."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "vlarena"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
HELM = ROOT / ".deps" / "bin" / "helm"
NODE_MODULES = ROOT / ".deps" / "deploy" / "node_modules"
VENV_BIN = ROOT / ".venv" / "bin"
# Kubernetes versions the rendered objects must validate against: the oldest the chart supports
# and the newest kubernetes-validate knows.
KUBE_VERSION = "1.29.0"
RELEASE, NAMESPACE = "arena", "ml-serving"


def require_tool(path: Path | str) -> str:
    """The tool's path; a missing one fails the test with the command that installs it."""
    found = shutil.which(str(path))
    if found is None:
        pytest.fail(f"{path} is missing: run `make deploy-tools`", pytrace=False)
    return found


def api_versions_of(values_file: Path) -> list[str]:
    """The CRD APIs a ci/ values file is meant for, from its `# api-versions:` header line."""
    for line in values_file.read_text().splitlines():
        if line.startswith("# api-versions:"):
            return line.split(":", 1)[1].split()
    return []


def helm(*args: str, chart: Path = CHART, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool(HELM), *args, str(chart)],
        capture_output=True,
        text=True,
        check=check,
        cwd=ROOT,
    )


def template_args(
    values_files: Sequence[Path] = (),
    api_versions: Sequence[str] = (),
    set_json: Sequence[str] = (),
) -> list[str]:
    args = ["template", RELEASE, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for path in values_files:
        args += ["-f", str(path)]
    for api in api_versions:
        args += ["--api-versions", api]
    for item in set_json:
        args += ["--set-json", item]
    return args


@functools.cache
def _render_cached(
    values_files: tuple[Path, ...], api_versions: tuple[str, ...], set_json: tuple[str, ...]
) -> tuple[dict[str, Any], ...]:
    out = helm(*template_args(values_files, api_versions, set_json)).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def render(
    values_files: Sequence[Path] = (),
    api_versions: Sequence[str] = (),
    set_json: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The chart's objects for these values (rendered once per distinct argument set)."""
    return list(_render_cached(tuple(values_files), tuple(api_versions), tuple(set_json)))


def render_ci(name: str) -> list[dict[str, Any]]:
    path = CHART / "ci" / f"{name}-values.yaml"
    return render([path], api_versions_of(path))


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    assert matches, (
        f"no {kind} {name} among {[o['metadata']['name'] for o in by_kind(objects, kind)]}"
    )
    return matches[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec(obj)["containers"] if c["name"] == name)


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def full(component: str) -> str:
    return f"{RELEASE}-vlarena-{component}"
