"""Fixtures for the data tests: an isolated cache, tiny images, and small built-in exports."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vlarena.data import export_builtin

SMALL_GRID = {"n_train": 40, "n_val": 10, "n_test": 20}


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own VLARENA_CACHE_DIR, so no test sees another's exports."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("VLARENA_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def fashion_grid_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small fashion-grid export (40 train, 10 val, 20 test grids), shared by the session."""
    return export_builtin("fashion-grid", tmp_path_factory.mktemp("fashion-grid"), **SMALL_GRID)


@pytest.fixture(scope="session")
def emoji_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full emoji export (about half a second), shared by the session."""
    return export_builtin("emoji", tmp_path_factory.mktemp("emoji"))


@pytest.fixture
def red_png(tmp_path: Path) -> Path:
    """A 4x4 opaque red PNG."""
    path = tmp_path / "red.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(path)
    return path


@pytest.fixture
def write_manifest_lines(tmp_path: Path, red_png: Path) -> Callable[..., Path]:
    """Write manifest.jsonl (beside red.png) from dicts or raw strings; returns its path."""

    def write(*lines: dict[str, Any] | str, sidecar: dict[str, Any] | None = None) -> Path:
        text = "".join(
            (line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines
        )
        path = tmp_path / "manifest.jsonl"
        path.write_text(text, encoding="utf-8")
        if sidecar is not None:
            (tmp_path / "dataset.json").write_text(json.dumps(sidecar), encoding="utf-8")
        return path

    return write
