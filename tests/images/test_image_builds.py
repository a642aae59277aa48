"""What `make images` promises of each built image: the commit it came from, the Dockerfile's
non-root user, a size within its budget, no trace of the build's package configuration, and a
valid CycloneDX SBOM of what it holds."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import MODE, head, images_module

COMPONENTS = sorted(images_module.IMAGES)


@pytest.fixture(scope="module")
def inspected(built_images: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {c: images_module.inspect(tag) for c, tag in built_images.items()}


@pytest.fixture(scope="module")
def rootfs(built_images: dict[str, str]) -> Iterator[dict[str, Path]]:
    """Each image's file system, mounted read-only."""
    mounts = {}
    try:
        for component, tag in built_images.items():
            mounts[component] = Path(
                subprocess.run(
                    ["podman", "image", "mount", tag], capture_output=True, text=True, check=True
                ).stdout.strip()
            )
        yield mounts
    finally:
        for tag in built_images.values():
            subprocess.run(["podman", "image", "unmount", tag], capture_output=True, check=False)


def sbom(component: str) -> dict[str, Any]:
    return json.loads((images_module.SBOM_DIR / f"{component}.cdx.json").read_text())


@pytest.mark.parametrize("component", COMPONENTS)
def test_images_carry_the_commit_they_were_built_from(
    component: str, inspected: dict[str, dict[str, Any]]
) -> None:
    labels = inspected[component]["Labels"]
    revision = labels[images_module.REVISION_LABEL]
    assert re.fullmatch(r"[0-9a-f]{40}", revision)
    if MODE != "require":
        assert revision == head()
    assert labels["org.opencontainers.image.version"] in images_module.chart_image(component)


@pytest.mark.parametrize("component", COMPONENTS)
def test_images_run_as_their_dockerfiles_non_root_user(
    component: str, inspected: dict[str, dict[str, Any]]
) -> None:
    dockerfile = images_module.IMAGES[component].dockerfile
    (user,) = [r for k, r in images_module.instructions(dockerfile) if k == "USER"][-1:]
    assert inspected[component]["Config"]["User"] == user
    assert int(user.split(":")[0]) != 0


@pytest.mark.parametrize("component", COMPONENTS)
def test_images_fit_their_size_budgets(
    component: str, inspected: dict[str, dict[str, Any]]
) -> None:
    size_mb = inspected[component]["Size"] / images_module.MB
    assert size_mb <= images_module.IMAGES[component].budget_mb, f"{size_mb:.0f} MB"


@pytest.mark.parametrize("component", COMPONENTS)
def test_images_keep_none_of_the_builds_package_configuration(
    component: str, rootfs: dict[str, Path]
) -> None:
    root = rootfs[component]
    for path in (
        "run/build-config",
        "etc/pip.conf",
        "etc/xdg/pip",
        "root/.config/pip",
        "root/.pip",
        "root/.npmrc",
        "etc/npmrc",
    ):
        assert not (root / path).exists(), path


@pytest.mark.parametrize("component", COMPONENTS)
def test_images_have_a_valid_sbom_of_what_they_hold(
    component: str, inspected: dict[str, dict[str, Any]]
) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    path = images_module.SBOM_DIR / f"{component}.cdx.json"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(path.read_text()) is None
    document = sbom(component)
    properties = {p["name"]: p["value"] for p in document["metadata"]["component"]["properties"]}
    assert properties["vlarena:image-id"] == inspected[component]["Id"], "stale SBOM"
    purls = [c["purl"] for c in document["components"]]
    debs = {p.split("/")[2].split("@")[0] for p in purls if p.startswith("pkg:deb/")}
    assert "libc6" in debs
    pypi = {p.split("/")[1].split("@")[0] for p in purls if p.startswith("pkg:pypi/")}
    expected = {
        "gateway": {"vlarena", "fastapi", "uvicorn", "tritonclient"},
        "worker": {"vlarena", "torch", "celery", "onnxruntime"},
        "triton": {"numpy", "onnxruntime-gpu", "nvidia-pytriton"},
    }[component]
    assert expected <= pypi, expected - pypi
    if component == "gateway":
        assert not {"torch", "transformers", "onnxruntime"} & pypi


def test_the_gateway_sbom_lists_its_lock(built_images: dict[str, str]) -> None:
    lock = {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
        for line in (images_module.SERVICES / "gateway" / "requirements.txt")
        .read_text()
        .splitlines()
        if "==" in line
    }
    pypi = {c["name"] for c in sbom("gateway")["components"] if c["purl"].startswith("pkg:pypi/")}
    assert lock <= pypi, lock - pypi
