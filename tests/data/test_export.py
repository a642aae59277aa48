"""export_dataset: built-ins and user manifests written as self-contained directories."""

from __future__ import annotations

import dataclasses
import shutil

from PIL import Image

from vlarena.data import export_dataset, load_dataset, load_image, load_manifest, write_manifest

from .conftest import SMALL_GRID


def without_location(records):
    """Records with the fields that depend on where the manifest lives blanked."""
    return [dataclasses.replace(record, image="", line=0) for record in records]


def test_an_exported_builtin_loads_back_with_the_same_records(tmp_path):
    manifest = export_dataset("fashion-grid", tmp_path / "out", **SMALL_GRID)
    exported = load_manifest(manifest)
    cached = load_dataset("fashion-grid", **SMALL_GRID)
    assert exported.records == [
        dataclasses.replace(record, image=str(tmp_path / "out" / "images" / f"{record.id}.png"))
        for record in cached.records
    ]
    assert exported.info == cached.info
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "manifest.jsonl",
        "dataset.json",
        "images",
    }


def test_an_exported_manifest_copies_its_images_and_survives_the_source(tmp_path):
    source = tmp_path / "source"
    for folder, colour in (("a", "red"), ("b", "blue")):
        (source / folder).mkdir(parents=True)
        Image.new("RGB", (3, 3), colour).save(source / folder / "same-name.png")
    records = [
        {"image": "a/same-name.png", "query": "colour?", "answer": "red", "label": "red"},
        {"image": "b/same-name.png", "captions": ["blue", "a blue square"], "split": "test"},
        {"image": "https://example.invalid/remote.png", "labels": {"left": "red"}},
    ]
    write_manifest(records, source, {"name": "colours", "label_template": "a {label} square"})
    original = load_manifest(source)

    exported_path = export_dataset(source, tmp_path / "out")
    shutil.rmtree(source)
    exported = load_manifest(exported_path)

    assert without_location(exported.records) == without_location(original.records)
    assert exported.info == dataclasses.replace(original.info, name="colours")
    first, second, remote = exported.records
    assert first.image != second.image
    assert first.image.startswith(str(tmp_path / "out" / "images"))
    assert load_image(second.image, 3)[2, 0, 0] == 1.0  # the blue one, still blue
    assert remote.image == "https://example.invalid/remote.png"
