"""Templates: articles that agree with the value, fill_caption and fill_label."""

from __future__ import annotations

import pytest

from vlarena.data import DataError, DatasetInfo, fill_caption, fill_label, with_article
from vlarena.data.templates import fill_template, template_fields


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
