"""Templates: articles that agree with the value, fill_caption and fill_label."""

from __future__ import annotations

import string
from pathlib import Path

import pytest

from vlarena.data import (
    DataError,
    DatasetInfo,
    export_builtin,
    fill_caption,
    fill_label,
    load_manifest,
    with_article,
)
from vlarena.data.templates import (
    HELDOUT_LABEL_TEMPLATES,
    HELDOUT_SLOT_TEMPLATES,
    fill_template,
    heldout_prompts,
    template_fields,
)


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [("sneaker", "a sneaker"), ("ankle boot", "an ankle boot"), ("objects", "an objects")],
)
def test_with_article_picks_a_or_an_by_first_letter(phrase, expected):
    assert with_article(phrase) == expected


def test_an_article_before_a_field_agrees_with_its_value():
    template = "A {x} and a {y}, an {z}, banana {w}"
    filled = fill_template(template, {"x": "owl", "y": "apple", "z": "cat", "w": "split"})
    assert filled == "An owl and an apple, a cat, banana split"


def test_a_missing_value_or_format_spec_is_a_data_error():
    with pytest.raises(DataError, match=r"needs a value for \{y\}"):
        fill_template("{x} {y}", {"x": "a"})
    with pytest.raises(DataError, match="format spec"):
        fill_template("{x:>5}", {"x": "a"})


def test_template_fields_lists_fields_in_order():
    assert template_fields("a {b} c {d}{{e}}") == ["b", "d"]


def test_fill_caption_fills_slots_so_per_slot_candidates_differ_in_one_place():
    info = DatasetInfo(
        name="grid", caption_template="a {left} left, a {right} right", slots=("left", "right")
    )
    labels = {"left": "bag", "right": "ankle boot"}
    assert fill_caption(info, labels) == "a bag left, an ankle boot right"
    candidates = [fill_caption(info, {**labels, "left": c}) for c in ("bag", "coat", "ankle boot")]
    assert candidates == [
        "a bag left, an ankle boot right",
        "a coat left, an ankle boot right",
        "an ankle boot left, an ankle boot right",
    ]


def test_fill_caption_needs_a_caption_template():
    with pytest.raises(DataError, match="no caption_template"):
        fill_caption(DatasetInfo(name="plain"), {"left": "bag"})


def test_fill_label_uses_the_label_template():
    assert fill_label(DatasetInfo(name="plain"), "owl") == "owl"
    info = DatasetInfo(name="emoji", label_template="a {label} emoji")
    assert fill_label(info, "activities") == "an activities emoji"


@pytest.mark.parametrize("grid", [2, 3])
def test_heldout_prompts_never_occur_in_a_built_in_caption(emoji_manifest, tmp_path: Path, grid):
    grids = export_builtin("fashion-grid", tmp_path, grid=grid, n_train=60, n_val=0, n_test=0)
    for manifest in (emoji_manifest, grids):
        ds = load_manifest(manifest)
        captions = "\n".join(c.lower() for r in ds.records for c in r.captions)
        assert captions
        # Each template's own wording (its literal runs of two words or more)...
        for template in HELDOUT_LABEL_TEMPLATES + HELDOUT_SLOT_TEMPLATES:
            for literal, *_ in string.Formatter().parse(template):
                words = literal.strip(" .")
                if " " in words:
                    assert words not in captions, (ds.info.name, template)
        # ...and every prompt it gives, for every class and slot.
        slots = ds.info.slots or (None,)
        prompts = [
            p for c in ds.info.classes for s in slots for p in heldout_prompts(ds.info, c, s)
        ]
        assert len(prompts) == 3 * len(ds.info.classes) * len(slots)
        assert not [p for p in prompts if p.lower() in captions]


def test_heldout_slot_prompts_name_the_position_and_agree_with_the_class():
    info = DatasetInfo(name="grid", slots=("top_left", "center"), slot_phrases={"center": "center"})
    assert heldout_prompts(info, "ankle boot", "center") == [
        "in the center of this photo is an ankle boot",
        "the center of the image shows an ankle boot",
        "the center holds an ankle boot",
    ]
    assert heldout_prompts(info, "bag", "top_left")[2] == "the top left holds a bag"
    assert heldout_prompts(info, "owl") == [
        "a photo of an owl",
        "an image showing an owl",
        "this picture contains an owl",
    ]
