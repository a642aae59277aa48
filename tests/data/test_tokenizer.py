"""The MiniLM WordPiece tokenizer and model-side vocabularies."""

from __future__ import annotations

import re

import numpy as np
import pytest

from vlarena.data import DataError, Vocabulary, WordPieceTokenizer, load_manifest


@pytest.fixture(scope="module")
def tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer.minilm()


def test_minilm_specials_and_size(tokenizer):
    assert tokenizer.vocab_size == 30522
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id) == (
        0,
        100,
        101,
        102,
    )


def test_encode_adds_no_special_tokens_and_does_not_pad(tokenizer):
    ids = tokenizer.encode("a bag")
    assert ids == [1037, 4524]
    assert tokenizer.encode_batch(["a bag", "a"]) == [ids, [1037]]


def test_decode_joins_pieces_and_skips_specials(tokenizer):
    ids = tokenizer.encode("a smileys emoji")
    assert len(ids) > 3  # "smileys" and "emoji" are split into ## pieces
    assert tokenizer.decode([tokenizer.cls_id, *ids, tokenizer.sep_id, 0]) == "a smileys emoji"


def test_lower_case_captions_round_trip(tokenizer, fashion_grid_manifest, emoji_manifest):
    captions = load_manifest(fashion_grid_manifest).captions()
    assert any("t-shirt" in caption for caption in captions)
    plain = re.compile(r"[a-z0-9 ,]+")
    captions += [c for c in load_manifest(emoji_manifest).captions() if plain.fullmatch(c)]
    assert len(captions) > 1500
    for caption, ids in zip(captions, tokenizer.encode_batch(captions), strict=True):
        assert tokenizer.decode(ids) == caption


def test_from_texts_holds_the_used_ids_and_the_specials(tokenizer):
    texts = ["a bag top left", "an ankle boot top right"]
    used = {i for text in texts for i in tokenizer.encode(text)}
    vocabulary = Vocabulary.from_texts(tokenizer, texts)
    assert len(vocabulary) == len(used) + 4
    assert vocabulary.wordpiece_ids[0] == tokenizer.pad_id
    assert list(vocabulary.wordpiece_ids[1:]) == sorted(vocabulary.wordpiece_ids[1:])
    assert vocabulary.pad_id == 0
    assert len({vocabulary.pad_id, vocabulary.bos_id, vocabulary.eos_id, vocabulary.unk_id}) == 4
    assert max(vocabulary.encode("an ankle boot top left")) < len(vocabulary)


def test_words_outside_the_vocabulary_become_unk(tokenizer):
    vocabulary = Vocabulary.from_texts(tokenizer, ["a bag"])
    ids = vocabulary.encode("a zebra", bos=False, eos=False)
    assert ids[0] != vocabulary.unk_id
    assert set(ids[1:]) == {vocabulary.unk_id}
    assert vocabulary.decode(ids) == "a"


def test_encode_wraps_in_bos_eos_and_decode_stops_at_eos(tokenizer):
    vocabulary = Vocabulary.from_texts(tokenizer, ["a bag top left", "a coat"])
    ids = vocabulary.encode("a bag top left")
    assert ids[0] == vocabulary.bos_id and ids[-1] == vocabulary.eos_id
    assert vocabulary.encode("a coat", bos=False, eos=False) == ids[1:2] + vocabulary.encode(
        "coat", bos=False, eos=False
    )
    trailing = [*ids, *vocabulary.encode("a coat", bos=False), vocabulary.pad_id]
    assert vocabulary.decode(trailing) == "a bag top left"
    assert vocabulary.decode(np.array([vocabulary.pad_id, *ids[1:]])) == "a bag top left"


def test_encode_batch_pads_with_pad_id_and_cuts_at_max_len(tokenizer):
    vocabulary = Vocabulary.from_texts(tokenizer, ["a bag top left", "a coat"])
    ids, lengths = vocabulary.encode_batch(["a bag top left", "a coat"])
    assert ids.dtype == np.int64 and lengths.dtype == np.int64
    assert ids.shape == (2, 6)
    assert lengths.tolist() == [6, 4]
    assert ids[1, 4:].tolist() == [vocabulary.pad_id] * 2
    assert ids[0].tolist() == vocabulary.encode("a bag top left")

    cut, cut_lengths = vocabulary.encode_batch(["a bag top left", "a coat"], max_len=3)
    assert cut.tolist() == [ids[0, :3].tolist(), ids[1, :3].tolist()]
    assert cut_lengths.tolist() == [3, 3]


def test_full_vocabulary_is_the_identity(tokenizer):
    vocabulary = Vocabulary.full(tokenizer)
    assert len(vocabulary) == 30522
    ids = tokenizer.encode("a grinning face")
    assert vocabulary.encode("a grinning face", bos=False, eos=False) == ids
    assert (vocabulary.bos_id, vocabulary.eos_id, vocabulary.unk_id) == (101, 102, 100)


def test_to_dict_from_dict_round_trip(tokenizer):
    vocabulary = Vocabulary.from_texts(tokenizer, ["a sneaker top left"])
    stored = vocabulary.to_dict()
    assert stored == {"wordpiece_ids": list(vocabulary.wordpiece_ids)}
    restored = Vocabulary.from_dict(stored, tokenizer)
    assert restored == vocabulary
    assert restored.encode("a sneaker") == vocabulary.encode("a sneaker")


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        ({}, "wordpiece_ids"),
        ({"wordpiece_ids": [101, 0, 102, 100]}, "first WordPiece id must be the pad id"),
        ({"wordpiece_ids": [0, 101, 101, 102, 100]}, "twice"),
        ({"wordpiece_ids": [0, 101, 102]}, r"\[UNK\]"),
        ({"wordpiece_ids": [0, 100, 101, 102, 40000]}, "outside"),
    ],
)
def test_from_dict_rejects_invalid_vocabularies(tokenizer, stored, problem):
    with pytest.raises(DataError, match=problem):
        Vocabulary.from_dict(stored, tokenizer)
