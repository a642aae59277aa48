"""Manifest loading: fields, image references, validation errors, sidecar, splits, fingerprints."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from vlarena.data import (
    DataError,
    ImageError,
    ManifestError,
    Question,
    load_manifest,
    write_manifest,
)
from vlarena.data.manifest import hashed_split

GOOD = {"image": "red.png", "captions": ["a red square"]}


def test_every_field_is_parsed_into_the_record(write_manifest_lines, red_png):
    path = write_manifest_lines(
        {
            "id": "r1",
            "image": "red.png",
            "captions": ["a red square", "red"],
            "query": "what colour?",
            "answer": "red",
            "choices": ["red", "blue"],
            "questions": [{"query": "what shape?", "answer": "square"}],
            "label": "red",
            "split": "val",
        },
        {"image": "red.png", "caption": "one caption", "labels": {"left": "red"}, "id": 7},
    )
    first, second = load_manifest(path).records

    assert first.id == "r1"
    assert first.image == str(red_png)
    assert first.captions == ("a red square", "red")
    assert first.questions == (
        Question("what colour?", "red", ("red", "blue")),
        Question("what shape?", "square", None),
    )
    assert (first.label, first.labels, first.split, first.line) == ("red", None, "val", 1)
    assert second.id == "7"  # integer ids (COCO's) become strings
    assert second.captions == ("one caption",)
    assert second.labels == {"left": "red"}
    assert second.split is None


def test_id_defaults_to_the_line_number(write_manifest_lines):
    path = write_manifest_lines(GOOD, "", GOOD)
    assert [record.id for record in load_manifest(path).records] == ["1", "3"]


def test_a_directory_path_loads_its_manifest_jsonl(write_manifest_lines, tmp_path):
    write_manifest_lines(GOOD)
    assert len(load_manifest(tmp_path)) == 1


@pytest.mark.parametrize("form", ["relative", "absolute", "file-uri", "nested-relative"])
def test_image_references_resolve_to_the_absolute_path(write_manifest_lines, red_png, form):
    (red_png.parent / "sub").mkdir()
    reference = {
        "relative": "red.png",
        "absolute": str(red_png),
        "file-uri": red_png.as_uri(),
        "nested-relative": "sub/../red.png",
    }[form]
    path = write_manifest_lines({"image": reference})
    assert load_manifest(path).records[0].image == str(red_png)


def test_http_images_stay_urls_and_are_not_fetched_at_load(write_manifest_lines):
    path = write_manifest_lines({"image": "https://example.invalid/cat.png"})
    assert load_manifest(path).records[0].image == "https://example.invalid/cat.png"


BAD_LINES = [
    ('{"image": "red.png", "captions": ', None, "invalid JSON"),
    ("[1, 2]", None, "expected a JSON object, got list"),
    ({"captions": ["x"]}, "image", "missing"),
    ({"image": 3}, "image", "expected a string, got int"),
    ({"image": "s3://bucket/x.png"}, "image", "unsupported URL scheme 's3'"),
    ({"image": "red.png", "captions": 5}, "captions", "expected a list of strings, got int"),
    ({"image": "red.png", "captions": ["a", 2]}, "captions", "a list holding int"),
    ({"image": "red.png", "captions": []}, "captions", "empty list"),
    ({"image": "red.png", "captions": ["a", " "]}, "captions[1]", "non-empty string"),
    ({"image": "red.png", "caption": "a", "captions": ["b"]}, "caption", "not both"),
    ({"image": "red.png", "captons": ["a"]}, "captons", 'did you mean "captions"'),
    ({"image": "red.png", "split": "training"}, "split", "expected one of train, val, test"),
    ({"image": "red.png", "label": 1}, "label", "expected a string, got int"),
    ({"image": "red.png", "labels": ["a"]}, "labels", "expected an object, got list"),
    ({"image": "red.png", "labels": {"left": None}}, "labels.left", "got null"),
    ({"image": "red.png", "query": "what?"}, "answer", 'needs an "answer"'),
    ({"image": "red.png", "answer": "red"}, "answer", 'needs a "query"'),
    (
        {"image": "red.png", "query": "q", "answer": "red", "choices": ["blue"]},
        "choices",
        "not among the choices",
    ),
    ({"image": "red.png", "questions": {}}, "questions", "expected a non-empty list"),
    (
        {"image": "red.png", "questions": [{"query": "q", "anwser": "a"}]},
        "questions[0].anwser",
        "unknown field",
    ),
    ({"image": "red.png", "questions": [{"query": "q"}]}, "questions[0].answer", "missing"),
    ({"image": "red.png", "id": "first"}, "id", "duplicate id 'first' (first used on line 1)"),
]


@pytest.mark.parametrize(("bad_line", "field", "problem"), BAD_LINES)
def test_an_invalid_record_names_its_line_and_field(write_manifest_lines, bad_line, field, problem):
    path = write_manifest_lines({**GOOD, "id": "first"}, GOOD, bad_line)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    error = caught.value
    assert (error.path, error.line, error.field) == (path, 3, field)
    assert "line 3" in str(error)
    assert problem in str(error)
    if field is not None:
        assert f'field "{field}"' in str(error)


def test_error_message_reads_file_line_field_problem(write_manifest_lines):
    path = write_manifest_lines(GOOD, {"image": "red.png", "captions": 12})
    with pytest.raises(
        ManifestError,
        match=r'manifest\.jsonl line 2, field "captions": expected a list of strings, got int$',
    ):
        load_manifest(path)


def test_a_missing_image_file_names_the_file_and_line(write_manifest_lines, tmp_path):
    path = write_manifest_lines(GOOD, {"image": "absent.png"})
    with pytest.raises(ImageError) as caught:
        load_manifest(path)
    assert caught.value.image == str(tmp_path / "absent.png")
    assert caught.value.line == 2
    assert "absent.png" in str(caught.value)
    assert "line 2" in str(caught.value)


def test_an_undecodable_image_fails_when_loaded_naming_file_and_line(
    write_manifest_lines, tmp_path
):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    dataset = load_manifest(write_manifest_lines(GOOD, {"image": "broken.png"}))
    with pytest.raises(ImageError, match=r"line 2: image .*broken\.png: cannot decode"):
        dataset.load_images(8)


def test_an_empty_manifest_is_an_error(write_manifest_lines):
    with pytest.raises(ManifestError, match="no records"):
        load_manifest(write_manifest_lines("", "   "))


def test_a_missing_manifest_is_an_error(tmp_path):
    with pytest.raises(DataError, match="cannot read manifest"):
        load_manifest(tmp_path / "nothing.jsonl")


def test_load_images_gives_n_3_size_size_in_minus_one_to_one(write_manifest_lines):
    images = load_manifest(write_manifest_lines(GOOD, GOOD)).load_images(16)
    assert images.shape == (2, 3, 16, 16)
    assert images.dtype == np.float32
    np.testing.assert_allclose(images[:, :, 0, 0], [[1, -1, -1], [1, -1, -1]])


def test_without_sidecar_info_comes_from_defaults(write_manifest_lines, tmp_path):
    path = write_manifest_lines({**GOOD, "label": "b"}, {**GOOD, "label": "a"})
    info = load_manifest(path).info
    assert info.name == tmp_path.name
    assert info.label_template == "{label}"
    assert info.caption_template is None
    assert info.classes == ("a", "b")


def test_sidecar_fields_are_read_and_slot_phrases_default_to_slot_words(write_manifest_lines):
    sidecar = {
        "name": "pairs",
        "license": "MIT",
        "label_template": "a photo of a {label}",
        "caption_template": "a {left_side} on the left, a {right_side} on the right",
        "classes": ["cat", "owl"],
        "slot_phrases": {"left_side": "on the left"},
    }
    path = write_manifest_lines(
        {**GOOD, "labels": {"left_side": "owl", "right_side": "cat"}}, sidecar=sidecar
    )
    info = load_manifest(path).info
    assert (info.name, info.license, info.label_template) == (
        "pairs",
        "MIT",
        sidecar["label_template"],
    )
    assert info.slots == ("left_side", "right_side")
    assert info.slot_phrases == {"left_side": "on the left", "right_side": "right side"}


@pytest.mark.parametrize(
    ("sidecar", "field", "problem"),
    [
        ({"classez": ["a"]}, "classez", 'did you mean "classes"'),
        ({"classes": "a"}, "classes", "expected a list of strings, got string"),
        ({"classes": ["a", "a"]}, "classes", "twice"),
        ({"label_template": "a {thing}"}, "label_template", "only the field {label}"),
        ({"caption_template": "a {middle}"}, "caption_template", "unknown slots ['middle']"),
        ({"caption_template": "a {left"}, "caption_template", "invalid template"),
        ({"slot_phrases": {"top": "top"}}, "slot_phrases.top", "not one of the slots"),
        ({"description": 3}, "description", "expected a string, got int"),
    ],
)
def test_an_invalid_sidecar_names_its_field(
    write_manifest_lines, tmp_path, sidecar, field, problem
):
    path = write_manifest_lines({**GOOD, "labels": {"left": "a"}}, sidecar=sidecar)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert problem in str(caught.value)
    assert caught.value.path == tmp_path / "dataset.json"
    assert caught.value.field == field


def test_a_label_outside_the_sidecar_classes_names_the_record(write_manifest_lines):
    path = write_manifest_lines(
        {**GOOD, "label": "cat"},
        {**GOOD, "labels": {"left": "dgo"}},
        sidecar={"classes": ["cat", "dog"], "slots": ["left"]},
    )
    with pytest.raises(ManifestError, match="'dgo' is not a class") as caught:
        load_manifest(path)
    assert (caught.value.line, caught.value.field) == (2, "labels.left")


def test_records_must_fill_every_slot_the_caption_template_uses(write_manifest_lines):
    path = write_manifest_lines(
        {**GOOD, "labels": {"left": "cat"}},
        sidecar={"slots": ["left", "right"], "caption_template": "a {left} and a {right}"},
    )
    with pytest.raises(ManifestError, match=r"misses slots .*right") as caught:
        load_manifest(path)
    assert (caught.value.line, caught.value.field) == (1, "labels")


def test_split_uses_the_record_split_else_a_hash_of_the_id(write_manifest_lines):
    lines = [{**GOOD, "id": f"r{i}"} for i in range(60)] + [{**GOOD, "id": "x", "split": "test"}]
    dataset = load_manifest(write_manifest_lines(*lines))
    parts = {
        name: [record.id for record in dataset.split(name).records]
        for name in ("train", "val", "test")
    }

    assert sorted(i for ids in parts.values() for i in ids) == sorted(r.id for r in dataset.records)
    assert "x" in parts["test"]
    for name, ids in parts.items():
        assert all(hashed_split(i) == name for i in ids if i != "x")
    with pytest.raises(DataError, match="unknown split"):
        dataset.split("training")


def test_hashed_split_is_stable_and_about_80_10_10():
    counts = Counter(hashed_split(f"image-{i}") for i in range(5000))
    assert hashed_split("image-0") == hashed_split("image-0")
    assert 0.77 < counts["train"] / 5000 < 0.83
    assert 0.08 < counts["val"] / 5000 < 0.12
    assert 0.08 < counts["test"] / 5000 < 0.12


def test_captions_and_labels_list_one_per_record(write_manifest_lines):
    dataset = load_manifest(write_manifest_lines({**GOOD, "label": "red"}, {**GOOD, "label": "b"}))
    assert dataset.captions() == ["a red square", "a red square"]
    assert dataset.labels() == ["red", "b"]


def test_captions_and_labels_fail_naming_a_record_without_them(write_manifest_lines):
    dataset = load_manifest(write_manifest_lines({**GOOD, "label": "red"}, {"image": "red.png"}))
    with pytest.raises(DataError, match="line 2: record has no caption"):
        dataset.captions()
    with pytest.raises(DataError, match="line 2: record has no label"):
        dataset.labels()


def test_fingerprint_follows_manifest_sidecar_and_split_not_location(tmp_path, red_png):
    def fingerprint(folder: str, captions: list[str], sidecar: dict | None = None) -> str:
        directory = tmp_path / folder
        directory.mkdir()
        records = [{"image": str(red_png), "captions": captions, "split": "train"}]
        return load_manifest(write_manifest(records, directory, sidecar)).fingerprint()

    base = fingerprint("a", ["red"])
    assert fingerprint("b", ["red"]) == base
    assert fingerprint("c", ["blue"]) != base
    assert fingerprint("d", ["red"], {"license": "MIT"}) != base
    dataset = load_manifest(tmp_path / "a")
    assert dataset.split("train").fingerprint() not in (base, dataset.split("test").fingerprint())


def test_write_manifest_round_trips_records_and_info(tmp_path, red_png):
    records = [
        {
            "id": "é-1",
            "image": str(red_png),
            "captions": ["line\u2028separator inside"],
            "label": "x",
        }
    ]
    path = write_manifest(records, tmp_path / "out", {"name": "written", "classes": ["x", "y"]})
    assert path == tmp_path / "out" / "manifest.jsonl"
    dataset = load_manifest(path)
    assert dataset.records[0].id == "é-1"
    assert dataset.records[0].captions == ("line\u2028separator inside",)
    assert dataset.info.classes == ("x", "y")
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["name"] == "written"
    assert not list(path.parent.glob("*.partial-*"))


def test_manifest_path_may_be_given_for_any_jsonl_name(tmp_path, red_png):
    path = write_manifest([{"image": str(red_png)}], tmp_path / "mine.jsonl")
    assert path == tmp_path / "mine.jsonl"
    assert load_manifest(path).manifest_path == path
