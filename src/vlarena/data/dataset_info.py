"""`DatasetInfo`: what a dataset's dataset.json sidecar says about it."""

from __future__ import annotations

from dataclasses import dataclass, field

# A module of its own, below both the manifest loader that builds a DatasetInfo and the
# templates that fill its caption and label templates, so neither imports the other for it.


@dataclass(frozen=True)
class DatasetInfo:
    """What dataset.json says about a dataset, with defaults filled in."""

    name: str
    description: str = ""
    license: str = ""
    attribution: str = ""
    label_template: str = "{label}"
    caption_template: str | None = None
    classes: tuple[str, ...] = ()
    slots: tuple[str, ...] = ()
    slot_phrases: dict[str, str] = field(default_factory=dict)
