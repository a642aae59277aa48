"""Exporting a dataset as a self-contained directory: manifest.jsonl, images/, dataset.json."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from vlarena.data.images import is_url
from vlarena.data.manifest import record_to_dict, write_manifest
from vlarena.data.registry import builtin_names, export_builtin, load_dataset


def export_dataset(
    name_or_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    split: str | None = None,
    **options: Any,
) -> Path:
    """Export a built-in (by name, with its options) or a manifest; returns the new manifest.

    A manifest's local images are copied into ``out_dir/images/`` and referenced relatively,
    so the directory can be moved or archived; http(s) images stay URLs. With ``split``, only
    that split's records are written, each marked with it (a held-out test set to evaluate
    on, say).
    """
    if split is None and isinstance(name_or_path, str) and name_or_path in builtin_names():
        return export_builtin(name_or_path, out_dir, **options)
    dataset = load_dataset(name_or_path, **options)
    if split is not None:
        dataset = dataset.split(split)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for index, record in enumerate(dataset.records):
        if split is not None:
            record = dataclasses.replace(record, split=split)
        image = record.image
        if not is_url(image):
            # The index keeps names unique when two source folders hold the same file name.
            image = f"images/{index:06d}-{Path(record.image).name}"
            shutil.copyfile(record.image, out_dir / image)
        rows.append(record_to_dict(record, image=image))
    # Empty values are dataset.json's defaults (a null caption_template would not validate).
    info = {key: value for key, value in dataclasses.asdict(dataset.info).items() if value}
    return write_manifest(rows, out_dir, info)
