"""load_dataset: built-ins exported once into the cache, user manifests by path, options."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from vlarena.data import DataError, builtin_names, load_dataset, registry, write_manifest
from vlarena.data.registry import COMPLETE_MARKER, builtin_cache_dir, builtin_options

from .conftest import SMALL_GRID


def test_builtin_names():
    assert builtin_names() == ["emoji", "fashion-grid"]


def test_a_builtin_is_exported_into_the_cache_and_loaded_from_its_manifest(isolated_cache):
    dataset = load_dataset("fashion-grid", **SMALL_GRID)
    target = builtin_cache_dir("fashion-grid", **SMALL_GRID)
    assert target.parent == isolated_cache / "datasets"
    assert target.name.startswith("fashion-grid-")
    assert dataset.manifest_path == target / "manifest.jsonl"
    assert (target / COMPLETE_MARKER).is_file()
    assert len(dataset) == 70
    assert not list(target.parent.glob("*.partial-*"))


def test_a_second_load_reuses_the_export(monkeypatch):
    first = load_dataset("fashion-grid", **SMALL_GRID)
    written = first.manifest_path.stat().st_mtime_ns

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(registry, "export_builtin", fail)
    second = load_dataset("fashion-grid", **SMALL_GRID)
    assert second.records == first.records
    assert second.manifest_path.stat().st_mtime_ns == written


def test_an_export_without_its_completion_marker_is_redone():
    first = load_dataset("fashion-grid", **SMALL_GRID)
    target = first.manifest_path.parent
    (target / COMPLETE_MARKER).unlink()
    first.manifest_path.write_text("{truncated")
    (target / "images" / "train-000000.png").unlink()

    again = load_dataset("fashion-grid", **SMALL_GRID)
    assert again.records == first.records
    assert (target / COMPLETE_MARKER).is_file()
    assert (target / "images" / "train-000000.png").is_file()


def test_staging_left_by_a_dead_exporter_is_removed():
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    target = builtin_cache_dir("fashion-grid", **SMALL_GRID)
    target.parent.mkdir(parents=True)
    abandoned = target.with_name(
        f"{target.name}.partial-{socket.gethostname()}-{finished.stdout.strip()}"
    )
    abandoned.mkdir()
    load_dataset("fashion-grid", **SMALL_GRID)
    assert not abandoned.exists()


def test_options_equal_to_defaults_share_one_cache_entry():
    assert builtin_cache_dir("fashion-grid") == builtin_cache_dir("fashion-grid", grid=2, seed=0)
    assert builtin_cache_dir("fashion-grid") != builtin_cache_dir("fashion-grid", seed=1)
    assert builtin_options("emoji") == {"seed": 0, "fractions": (0.8, 0.1, 0.1)}


def test_an_unknown_option_lists_the_valid_ones():
    with pytest.raises(DataError, match=r"fashion-grid has no option size; its options: grid=2"):
        load_dataset("fashion-grid", size=3)


def test_a_name_that_is_neither_builtin_nor_path_lists_the_builtins():
    with pytest.raises(DataError, match=r"neither a built-in dataset \(emoji, fashion-grid\)"):
        load_dataset("fashion_grid")


def test_a_path_loads_the_manifest_and_refuses_options(tmp_path, red_png):
    write_manifest([{"image": str(red_png), "caption": "red"}], tmp_path / "mine", None)
    assert load_dataset(tmp_path / "mine").captions() == ["red"]
    assert len(load_dataset(str(tmp_path / "mine" / "manifest.jsonl"))) == 1
    with pytest.raises(DataError, match="apply only to the built-in datasets"):
        load_dataset(tmp_path / "mine", seed=1)


def test_the_completion_marker_records_the_options():
    dataset = load_dataset("fashion-grid", **SMALL_GRID)
    marker = json.loads((dataset.manifest_path.parent / COMPLETE_MARKER).read_text())
    assert marker == {
        "name": "fashion-grid",
        "options": builtin_options("fashion-grid", **SMALL_GRID),
    }
