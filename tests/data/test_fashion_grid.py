"""The fashion-grid built-in: sources of tiles, captions, questions, determinism, options."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlarena.data import DataError, export_builtin, fill_caption, load_manifest
from vlarena.data.fashion_grid import CLASSES, ITEM_SIZE, VAL_HOLDOUT, read_fashion_mnist

from .conftest import SMALL_GRID


def tiles_of(image_path: str, grid: int) -> list[np.ndarray]:
    """The grid's 28x28 tiles in row-major order."""
    mosaic = np.asarray(Image.open(image_path))
    return [
        mosaic[row * ITEM_SIZE : (row + 1) * ITEM_SIZE, col * ITEM_SIZE : (col + 1) * ITEM_SIZE]
        for row in range(grid)
        for col in range(grid)
    ]


def index_items(images: np.ndarray, labels: np.ndarray) -> dict[bytes, set[str]]:
    """Item pixels -> the class names of items with exactly those pixels."""
    index: dict[bytes, set[str]] = {}
    for image, label in zip(images, labels, strict=True):
        index.setdefault(image.tobytes(), set()).add(CLASSES[label])
    return index


def test_each_split_draws_its_tiles_only_from_its_own_source_items(fashion_grid_manifest):
    train_images, train_labels = read_fashion_mnist("train")
    pools = {
        "train": index_items(train_images[:-VAL_HOLDOUT], train_labels[:-VAL_HOLDOUT]),
        "val": index_items(train_images[-VAL_HOLDOUT:], train_labels[-VAL_HOLDOUT:]),
        "test": index_items(*read_fashion_mnist("t10k")),
    }
    dataset = load_manifest(fashion_grid_manifest)
    for split, pool in pools.items():
        records = dataset.split(split).records
        assert len(records) == SMALL_GRID[f"n_{split}"]
        others = [other for name, other in pools.items() if name != split]
        for record in records:
            for slot, tile in zip(dataset.info.slots, tiles_of(record.image, 2), strict=True):
                assert record.labels[slot] in pool[tile.tobytes()]
                assert not any(tile.tobytes() in other for other in others)


def test_images_are_56_pixel_greyscale_pngs(fashion_grid_manifest):
    record = load_manifest(fashion_grid_manifest).records[0]
    with Image.open(record.image) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", (56, 56))


def test_caption_labels_and_questions_agree(fashion_grid_manifest):
    dataset = load_manifest(fashion_grid_manifest)
    info = dataset.info
    assert info.slots == ("top_left", "top_right", "bottom_left", "bottom_right")
    assert info.caption_template == (
        "a {top_left} top left, a {top_right} top right, "
        "a {bottom_left} bottom left, a {bottom_right} bottom right"
    )
    phrase = "|".join(re.escape(name) for name in CLASSES)
    pattern = re.compile(
        ", ".join(f"an? ({phrase}) {info.slot_phrases[slot]}" for slot in info.slots)
    )
    choices = tuple(("an " if c[0] in "aeiou" else "a ") + c for c in CLASSES)
    for record in dataset.records:
        assert record.label is None
        assert fill_caption(info, record.labels) == record.captions[0]
        assert pattern.fullmatch(record.captions[0]).groups() == tuple(record.labels.values())
        assert [q.query for q in record.questions] == [
            f"what is at the {info.slot_phrases[slot]}?" for slot in info.slots
        ]
        for question, slot in zip(record.questions, info.slots, strict=True):
            assert question.answer == choices[CLASSES.index(record.labels[slot])]
            assert question.choices == choices


def test_an_before_vowels(fashion_grid_manifest):
    captions = " ".join(load_manifest(fashion_grid_manifest).captions())
    assert "an ankle boot" in captions
    assert "a ankle" not in captions


def test_sidecar_carries_classes_and_the_mit_license(fashion_grid_manifest):
    info = load_manifest(fashion_grid_manifest).info
    assert info.name == "fashion-grid"
    assert info.classes == CLASSES
    assert info.license.startswith("MIT")
    assert "https://github.com/zalandoresearch/fashion-mnist" in info.attribution


def directory_bytes(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    options = {"n_train": 6, "n_val": 2, "n_test": 3}
    first = export_builtin("fashion-grid", tmp_path / "a", **options).parent
    second = export_builtin("fashion-grid", tmp_path / "b", **options).parent
    other = export_builtin("fashion-grid", tmp_path / "c", seed=1, **options).parent
    assert directory_bytes(first) == directory_bytes(second)
    assert (first / "manifest.jsonl").read_bytes() != (other / "manifest.jsonl").read_bytes()
    assert (first / "images" / "test-000000.png").read_bytes() != (
        other / "images" / "test-000000.png"
    ).read_bytes()


def test_more_training_grids_leave_the_test_grids_unchanged(tmp_path):
    few = load_manifest(
        export_builtin("fashion-grid", tmp_path / "few", n_train=2, n_val=1, n_test=3)
    )
    many = load_manifest(
        export_builtin("fashion-grid", tmp_path / "many", n_train=9, n_val=1, n_test=3)
    )
    assert few.split("test").captions() == many.split("test").captions()


def test_three_by_three_grids_have_nine_named_slots(tmp_path):
    dataset = load_manifest(
        export_builtin("fashion-grid", tmp_path, grid=3, n_train=2, n_val=0, n_test=1)
    )
    info = dataset.info
    assert info.slots == (
        "top_left", "top_middle", "top_right",
        "middle_left", "center", "middle_right",
        "bottom_left", "bottom_middle", "bottom_right",
    )  # fmt: skip
    assert info.slot_phrases["center"] == "center"
    assert np.asarray(Image.open(dataset.records[0].image)).shape == (84, 84)
    for record in dataset.records:
        assert fill_caption(info, record.labels) == record.captions[0]
        assert record.questions[4].query == "what is at the center?"


@pytest.mark.parametrize(
    ("options", "problem"),
    [({"grid": 4}, "grid=2 or grid=3"), ({"n_train": -1}, "n_train"), ({"seed": 1.5}, "seed")],
)
def test_invalid_options_are_data_errors(tmp_path, options, problem):
    with pytest.raises(DataError, match=problem):
        export_builtin("fashion-grid", tmp_path, **options)
