"""The emoji built-in: captions, labels, the split by emoji, and attribution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlarena.data import DataError, emoji_dir, export_builtin, fill_label, load_manifest
from vlarena.data.emoji import emoji_phrase, emoji_split


def test_every_emoji_with_twitter_art_becomes_a_self_contained_record(emoji_manifest):
    entries = json.loads((emoji_dir() / "emoji.json").read_text())
    dataset = load_manifest(emoji_manifest)
    assert len(dataset) == sum(1 for entry in entries if entry.get("has_img_twitter")) == 1911
    export_root = emoji_manifest.parent.resolve()
    assert all(Path(record.image).parent == export_root / "images" for record in dataset.records)
    with Image.open(dataset.records[0].image) as image:
        assert image.size == (64, 64)


def test_captions_name_category_and_subcategory(emoji_manifest):
    records = {record.id: record for record in load_manifest(emoji_manifest).records}
    grinning = records["1f600"]
    assert grinning.captions == (
        "grinning face, a smileys and emotion emoji about face smiling",
        "grinning face",
    )
    assert grinning.label == "smileys and emotion"
    assert records["1f407"].captions[0] == "rabbit, an animals and nature emoji about animal mammal"


def test_the_label_prompt_is_the_phrase_inside_every_caption(emoji_manifest):
    dataset = load_manifest(emoji_manifest)
    info = dataset.info
    assert info.label_template == "a {label} emoji"
    assert set(info.classes) == {record.label for record in dataset.records}
    assert len(info.classes) == 10
    for record in dataset.records:
        assert f", {fill_label(info, record.label)} about " in record.captions[0]
        assert record.captions[0] == record.captions[0].lower()
        assert "&" not in record.captions[0] and "-" not in record.captions[0]


def test_sidecar_carries_the_licenses_and_attribution(emoji_manifest):
    info = load_manifest(emoji_manifest).info
    assert info.license == (
        "CC-BY-4.0 (Twitter emoji art, Twemoji); emoji data MIT (iamcal/emoji-data)"
    )
    assert "https://github.com/twitter/twemoji" in info.attribution
    assert "https://github.com/iamcal/emoji-data" in info.attribution


def test_splits_are_disjoint_by_emoji_and_roughly_80_10_10(emoji_manifest):
    dataset = load_manifest(emoji_manifest)
    ids = {name: {r.id for r in dataset.split(name).records} for name in ("train", "val", "test")}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["val"]
    assert not ids["val"] & ids["test"]
    assert sum(len(part) for part in ids.values()) == len(dataset)
    assert 0.75 < len(ids["train"]) / len(dataset) < 0.85
    assert all(record.split is not None for record in dataset.records)


def test_the_split_of_an_emoji_depends_only_on_it_and_the_seed():
    fractions = (0.8, 0.1, 0.1)
    codes = [f"1f{i:03x}" for i in range(400)]
    splits = [emoji_split(code, 0, fractions) for code in codes]
    assert splits == [emoji_split(code, 0, fractions) for code in codes]
    assert splits != [emoji_split(code, 1, fractions) for code in codes]
    assert {emoji_split(code, 0, (0, 0, 1)) for code in codes} == {"test"}


@pytest.fixture
def tiny_emoji_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A three-entry emoji package (one without Twitter art), selected via VLARENA_EMOJI_DIR."""
    images = tmp_path / "package" / "img" / "twitter" / "64"
    images.mkdir(parents=True)
    entries = []
    for order, (code, name, art) in enumerate(
        [("1F600", "GRINNING FACE", True), ("1F407", "RABBIT", True), ("1F9A4", "DODO", False)]
    ):
        entries.append(
            {
                "unified": code,
                "name": name,
                "image": f"{code.lower()}.png",
                "category": "Smileys & Emotion",
                "subcategory": "face-smiling",
                "sort_order": order,
                "has_img_twitter": art,
            }
        )
        if art:
            Image.new("RGBA", (64, 64), (255, 200, 0, 255)).save(images / f"{code.lower()}.png")
    (tmp_path / "package" / "emoji.json").write_text(json.dumps(entries))
    monkeypatch.setenv("VLARENA_EMOJI_DIR", str(tmp_path / "package"))
    return tmp_path / "package"


def test_entries_without_twitter_art_are_skipped_and_splits_stay_stable(
    tiny_emoji_package, emoji_manifest, tmp_path
):
    tiny = load_manifest(export_builtin("emoji", tmp_path / "tiny"))
    full = {record.id: record.split for record in load_manifest(emoji_manifest).records}
    assert [record.id for record in tiny.records] == ["1f600", "1f407"]
    assert all(record.split == full[record.id] for record in tiny.records)


def test_same_seed_gives_identical_manifests_and_another_seed_moves_emoji(
    tiny_emoji_package, tmp_path
):
    def manifest_bytes(folder: str, **options: object) -> bytes:
        return export_builtin("emoji", tmp_path / folder, **options).read_bytes()

    assert manifest_bytes("a") == manifest_bytes("b")
    splits = {
        json.loads(line)["split"]
        for seed in range(8)
        for line in manifest_bytes(f"seed{seed}", seed=seed).decode().splitlines()
    }
    assert len(splits) > 1


def test_emoji_phrase_lowercases_and_spells_out_symbols():
    assert emoji_phrase("Antigua & Barbuda Flag") == "antigua and barbuda flag"
    assert emoji_phrase("face-smiling") == "face smiling"


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.9, 0.2, -0.1), (0.3, 0.3, 0.3)])
def test_fractions_must_be_three_non_negative_numbers_summing_to_one(tmp_path, fractions):
    with pytest.raises(DataError, match="fractions"):
        export_builtin("emoji", tmp_path, fractions=fractions)
