"""The floors of the package hold: import-linter's contracts (pyproject.toml) are kept, and they
fail when a module breaks a floor, imports torch into the gateway or closes an import cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    """The package and its contracts, copied so a test can break them."""
    shutil.copytree(ROOT / "src" / "vlarena", tmp_path / "src" / "vlarena")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_its_contracts() -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "3 kept, 0 broken" in done.stdout


def test_a_lazy_import_of_a_higher_floor_breaks_the_floors(copy: Path) -> None:
    (copy / "src/vlarena/nn/probe.py").write_text(
        "def run():\n    from vlarena.experiments import jobs\n\n    return jobs\n"
    )
    done = lint(copy)
    assert done.returncode == 1
    assert "vlarena.nn is not allowed to import vlarena.experiments" in done.stdout


def test_torch_in_the_gateway_breaks_its_contract(copy: Path) -> None:
    (copy / "src/vlarena/gateway/probe.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import torch\n"
    )
    done = lint(copy)
    assert done.returncode == 1
    assert "The gateway never imports torch" in done.stdout and "BROKEN" in done.stdout


def test_a_cycle_between_sibling_modules_is_refused(copy: Path) -> None:
    (copy / "src/vlarena/data/probe_a.py").write_text("from vlarena.data import probe_b\n")
    (copy / "src/vlarena/data/probe_b.py").write_text(
        "def back():\n    from vlarena.data import probe_a\n\n    return probe_a\n"
    )
    done = lint(copy)
    assert done.returncode == 1
    assert "No import cycles" in done.stdout and "BROKEN" in done.stdout
