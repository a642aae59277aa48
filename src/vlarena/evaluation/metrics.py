"""Metrics with their chance levels: retrieval recall, top-k accuracy, CIDEr and BLEU-4."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Metric:
    """A measured value beside the value chance would give, over `n` trials."""

    value: float
    chance: float
    n: int
    # Accuracy-like metrics are binomial; caption scores are not and have no standard error.
    binomial: bool = True
    # The score of each test item (1/0 for a hit, CIDEr per image): what paired intervals
    # between families resample. Items are in the same order for every model on the same data.
    items: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def stderr(self) -> float | None:
        """Binomial standard error at the chance level."""
        if not self.binomial or self.n <= 0:
            return None
        return math.sqrt(max(self.chance * (1 - self.chance), 0.0) / self.n)

    @property
    def z(self) -> float | None:
        """Standard errors above chance (binomial metrics)."""
        se = self.stderr
        return None if not se else (self.value - self.chance) / se

    def to_dict(self) -> dict:
        return {
            "value": self.value,
            "chance": self.chance,
            "n": self.n,
            "stderr": self.stderr,
            "z": self.z,
        }


def topk_hits(scores: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Per row, 1.0 when its target column is among the k highest scores, else 0.0.

    Ties count against the target (a constant scorer gets no credit).
    """
    scores = np.asarray(scores, dtype=np.float64)
    target_scores = scores[np.arange(len(targets)), targets]
    better_or_equal = (scores >= target_scores[:, None]).sum(1) - 1  # others at least as high
    return (better_or_equal < k).astype(np.float64)


def topk_accuracy(scores: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Fraction of rows whose target column is among the k highest scores."""
    return float(topk_hits(scores, targets, k).mean())


def retrieval_hits(scores: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, np.ndarray]:
    """Per query, hit@k both ways for a square score matrix (images × texts) whose diagonal
    is true: `i2t_rk` per image, `t2i_rk` per text."""
    scores = np.asarray(scores)
    n = scores.shape[0]
    if scores.shape != (n, n):
        raise ValueError(f"retrieval needs a square score matrix, got {scores.shape}")
    idx = np.arange(n)
    out = {}
    for k in ks:
        out[f"i2t_r{k}"] = topk_hits(scores, idx, k)
        out[f"t2i_r{k}"] = topk_hits(scores.T, idx, k)
    return out


def retrieval_recall(scores: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k both ways for a square score matrix (images × texts) whose diagonal is true."""
    return {name: float(hits.mean()) for name, hits in retrieval_hits(scores, ks).items()}


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def caption_tokens(text: str) -> str:
    """Lower-case words separated by spaces: the tokenization both caption scores read."""
    return " ".join(_WORD.findall(text.lower()))


def caption_scores(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]]
) -> dict[str, float]:
    """CIDEr-D and BLEU-4 (pycocoevalcap's scorers, without the Java tokenizer)."""
    return caption_item_scores(hypotheses, references)[0]


def caption_item_scores(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[dict[str, float], np.ndarray]:
    """`caption_scores` and the CIDEr-D of each hypothesis (their mean is the corpus CIDEr-D;
    BLEU-4 is a corpus statistic, not a mean over items)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError("caption scores need one hypothesis per reference set, at least one")
    res = {i: [caption_tokens(h) or "empty"] for i, h in enumerate(hypotheses)}
    gts = {i: [caption_tokens(r) for r in refs] for i, refs in enumerate(references)}
    cider, per_item = Cider().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {"cider": float(cider), "bleu4": float(bleu[3])}, np.asarray(per_item, dtype=float)
