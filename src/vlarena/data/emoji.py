"""The emoji built-in: Twitter's emoji art, captioned with names, categories, subcategories."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlarena.data.errors import DataError, DataUnavailableError
from vlarena.data.locations import emoji_dir
from vlarena.data.manifest import SPLITS, write_manifest
from vlarena.data.templates import fill_template

LABEL_TEMPLATE = "a {label} emoji"
IMAGE_DIR = Path("img/twitter/64")
LICENSE = "CC-BY-4.0 (Twitter emoji art, Twemoji); emoji data MIT (iamcal/emoji-data)"
ATTRIBUTION = (
    "Emoji art: Twemoji, Copyright 2020 Twitter, Inc and other contributors, licensed under "
    "CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/), "
    "https://github.com/twitter/twemoji. Emoji names and categories: emoji-data by "
    "Cal Henderson, MIT License, https://github.com/iamcal/emoji-data. Images are unmodified "
    "64x64 PNGs from the npm package emoji-datasource-twitter."
)


def emoji_phrase(text: str) -> str:
    """Names and categories as caption words: lower-case, "&" -> "and", "-" -> " "."""
    return " ".join(text.lower().replace("&", " and ").replace("-", " ").split())


def emoji_split(unified: str, seed: int, fractions: Sequence[float]) -> str:
    """The split of one emoji, from a hash of its code point(s) and the seed.

    Hashing each emoji on its own keeps its split stable when others are added or removed.
    """
    digest = hashlib.sha256(f"{seed}:{unified.lower()}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for split, fraction in zip(SPLITS, fractions, strict=True):
        cumulative += fraction
        if position < cumulative:
            return split
    return SPLITS[-1]


def read_emoji_entries(root: Path) -> list[dict[str, Any]]:
    """The entries of emoji.json that have Twitter art, in the package's sort order."""
    try:
        entries = json.loads((root / "emoji.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataUnavailableError(f"cannot read {root / 'emoji.json'}: {err}") from err
    with_art = [entry for entry in entries if entry.get("has_img_twitter")]
    return sorted(with_art, key=lambda entry: (entry["sort_order"], entry["unified"]))


def export_emoji(
    out_dir: Path, *, seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> Path:
    """Copy the 64x64 emoji PNGs and write manifest.jsonl and dataset.json; returns the manifest.

    Captions: "<name>, a <category> emoji about <subcategory>" and "<name>"; label: the
    category, so the prompt ``fill_label(info, label)`` is the caption's middle phrase.
    """
    if type(seed) is not int:
        raise DataError(f"emoji option seed must be an integer, got {seed!r}")
    fractions = tuple(fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(
            f"emoji option fractions must be 3 non-negative numbers summing to 1, got {fractions!r}"
        )
    root = emoji_dir()
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for entry in read_emoji_entries(root):
        source = root / IMAGE_DIR / entry["image"]
        if not source.is_file():
            raise DataUnavailableError(f"emoji image {source} is missing; reinstall the package")
        shutil.copyfile(source, out_dir / "images" / entry["image"])
        name = emoji_phrase(entry["name"])
        category = emoji_phrase(entry["category"])
        kind = fill_template(LABEL_TEMPLATE, {"label": category})
        records.append(
            {
                "id": entry["unified"].lower(),
                "image": f"images/{entry['image']}",
                "captions": [f"{name}, {kind} about {emoji_phrase(entry['subcategory'])}", name],
                "label": category,
                "split": emoji_split(entry["unified"], seed, fractions),
            }
        )
    info = {
        "name": "emoji",
        "description": (
            f"{len(records)} Twitter emoji (64x64) captioned with their names, categories and "
            f"subcategories; split by emoji with seed {seed} and fractions {list(fractions)}."
        ),
        "license": LICENSE,
        "attribution": ATTRIBUTION,
        "label_template": LABEL_TEMPLATE,
        "classes": sorted({record["label"] for record in records}),
    }
    return write_manifest(records, out_dir, info)
