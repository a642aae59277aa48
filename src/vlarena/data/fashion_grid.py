"""The fashion-grid built-in: mosaics of Fashion-MNIST items with positional captions."""

from __future__ import annotations

import functools
import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from vlarena.data.errors import DataError
from vlarena.data.locations import fashion_mnist_dir
from vlarena.data.manifest import write_manifest
from vlarena.data.templates import fill_template, with_article

CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
ITEM_SIZE = 28
# The last 10,000 items of Fashion-MNIST's train file feed val grids and never train grids,
# so validation measures items the model has not seen (the file's order is already random).
VAL_HOLDOUT = 10_000
LICENSE = "MIT (Fashion-MNIST, Zalando Research)"
ATTRIBUTION = (
    "Fashion-MNIST by Zalando Research (Han Xiao, Kashif Rasul, Roland Vollgraf, 2017), "
    "https://github.com/zalandoresearch/fashion-mnist, MIT License, Copyright (c) 2017 "
    "Zalando SE."
)
_ROWS = {2: ("top", "bottom"), 3: ("top", "middle", "bottom")}
_COLUMNS = {2: ("left", "right"), 3: ("left", "middle", "right")}


def grid_slots(grid: int) -> list[tuple[str, str]]:
    """(slot name, phrase) of each cell in row-major order: ("top_left", "top left"), ..."""
    if grid not in _ROWS:
        raise DataError(f"fashion-grid supports grid=2 or grid=3, got {grid!r}")
    slots = []
    for row in _ROWS[grid]:
        for column in _COLUMNS[grid]:
            if row == column == "middle":
                slots.append(("center", "center"))
            else:
                slots.append((f"{row}_{column}", f"{row} {column}"))
    return slots


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip-compressed, unsigned bytes) as an array of its declared shape."""
    data = gzip.decompress(path.read_bytes())
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not an idx file of unsigned bytes")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(shape)):
        raise DataError(f"{path} holds {values.size} values, its header declares {shape}")
    return values.reshape(shape)


@functools.lru_cache(maxsize=2)
def read_fashion_mnist(part: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's "train" (60,000) or "t10k" (10,000) items: (N, 28, 28) uint8 images,
    (N,) uint8 class indices into CLASSES. The arrays are shared, so read-only."""
    if part not in ("train", "t10k"):
        raise DataError(f'Fashion-MNIST parts are "train" and "t10k", got {part!r}')
    directory = fashion_mnist_dir()
    images = _read_idx(directory / f"{part}-images-idx3-ubyte.gz")
    labels = _read_idx(directory / f"{part}-labels-idx1-ubyte.gz")
    if images.shape[1:] != (ITEM_SIZE, ITEM_SIZE) or len(images) != len(labels):
        raise DataError(f"Fashion-MNIST {part}: images {images.shape}, labels {labels.shape}")
    return images, labels


def item_pool(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The Fashion-MNIST items a split's grids draw from: (images, class indices)."""
    if split == "test":
        return read_fashion_mnist("t10k")
    images, labels = read_fashion_mnist("train")
    if split == "train":
        return images[:-VAL_HOLDOUT], labels[:-VAL_HOLDOUT]
    if split == "val":
        return images[-VAL_HOLDOUT:], labels[-VAL_HOLDOUT:]
    raise DataError(f"unknown split {split!r}")


def caption_template(grid: int) -> str:
    """ "a {top_left} top left, a {top_right} top right, ..." (see vlarena.data.templates)."""
    return ", ".join(f"a {{{slot}}} {phrase}" for slot, phrase in grid_slots(grid))


def export_fashion_grid(
    out_dir: Path,
    *,
    grid: int = 2,
    n_train: int = 8000,
    n_val: int = 500,
    n_test: int = 1000,
    seed: int = 0,
) -> Path:
    """Write grid x grid mosaics as greyscale PNGs with manifest.jsonl and dataset.json.

    Each split has its own random stream from ``seed``, so changing ``n_train`` does not
    change the test grids. Returns the manifest path.
    """
    numbers = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": seed}
    for name, value in numbers.items():
        if type(value) is not int or value < 0:
            raise DataError(f"fashion-grid option {name} must be a non-negative integer")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    slots = grid_slots(grid)
    template = caption_template(grid)
    choices = [with_article(name) for name in CLASSES]
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)

    records = []
    for split_index, (split, count) in enumerate(counts.items()):
        images, labels = item_pool(split)
        rng = np.random.default_rng([seed, split_index])
        picks = rng.integers(0, len(images), size=(count, grid * grid))
        for index, items in enumerate(picks):
            # (grid*grid, 28, 28) -> rows of tiles -> (grid*28, grid*28), row-major like slots.
            tiles = images[items].reshape(grid, grid, ITEM_SIZE, ITEM_SIZE)
            mosaic = tiles.transpose(0, 2, 1, 3).reshape(grid * ITEM_SIZE, grid * ITEM_SIZE)
            record_id = f"{split}-{index:06d}"
            Image.fromarray(mosaic).save(out_dir / "images" / f"{record_id}.png")
            grid_labels = {
                slot: CLASSES[labels[item]] for (slot, _), item in zip(slots, items, strict=True)
            }
            records.append(
                {
                    "id": record_id,
                    "image": f"images/{record_id}.png",
                    "captions": [fill_template(template, grid_labels)],
                    "questions": [
                        {
                            "query": f"what is at the {phrase}?",
                            "answer": with_article(grid_labels[slot]),
                            "choices": choices,
                        }
                        for slot, phrase in slots
                    ],
                    "labels": grid_labels,
                    "split": split,
                }
            )
    info = {
        "name": "fashion-grid",
        "description": (
            f"{grid}x{grid} grids of 28x28 Fashion-MNIST items ({n_train} train, {n_val} val, "
            f"{n_test} test; seed {seed}). Train grids draw from the first 50,000 items of the "
            "Fashion-MNIST train split, val grids from its last 10,000, test grids from t10k."
        ),
        "license": LICENSE,
        "attribution": ATTRIBUTION,
        "caption_template": template,
        "classes": list(CLASSES),
        "slots": [slot for slot, _ in slots],
        "slot_phrases": dict(slots),
    }
    return write_manifest(records, out_dir, info)
