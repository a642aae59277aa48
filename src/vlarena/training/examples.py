"""Training examples drawn deterministically from (seed, step): resuming needs only the step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vlarena.data.manifest import Dataset
from vlarena.errors import UserInputError


@dataclass(frozen=True)
class Example:
    row: int  # index into the split's visual inputs
    text: str  # the target: a caption or an answer
    query: str | None = None


class ExampleSource:
    """The examples of a split: each image's captions and its question-answer pairs.

    The global batch of a step is a pure function of (seed, step): an epoch is a seeded
    permutation of the images, and each image contributes a caption or, with probability
    `vqa_fraction` when it has questions, one of its questions.
    """

    def __init__(self, dataset: Dataset, vqa_fraction: float = 0.0) -> None:
        if not 0.0 <= vqa_fraction <= 1.0:
            raise ValueError(f"vqa_fraction must be in [0, 1], got {vqa_fraction}")
        self.captions = [list(r.captions) for r in dataset.records]
        self.questions = [[(q.query, q.answer) for q in r.questions] for r in dataset.records]
        if not any(self.captions) and not any(self.questions):
            raise UserInputError(
                f"{dataset.manifest_path}: the training split has no captions and no questions "
                "to learn from"
            )
        self.vqa_fraction = vqa_fraction if any(self.questions) else 0.0
        self.n = len(self.captions)
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def texts(self) -> list[str]:
        """Every text the model may read or write (for a vocabulary built from the data)."""
        out = [c for cs in self.captions for c in cs]
        out += [t for qs in self.questions for pair in qs for t in pair]
        return out

    def targets(self) -> list[str]:
        """Every text the model is trained to produce: captions and answers."""
        return [c for cs in self.captions for c in cs] + [a for qs in self.questions for _, a in qs]

    def _permutation(self, seed: int, epoch: int) -> np.ndarray:
        key = (seed, epoch)
        if key not in self._perms:
            if len(self._perms) > 2:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([seed, epoch]).permutation(self.n)
        return self._perms[key]

    def batch(
        self, seed: int, step: int, batch_size: int, size: int | None = None
    ) -> list[Example]:
        """The global batch of `step` (the first `size` examples of it when given)."""
        size = batch_size if size is None else size
        rng = np.random.default_rng([seed, step, 1])
        picks = rng.random(size)
        choice = rng.integers(0, 1 << 30, size)
        out = []
        for j in range(size):
            pos = step * batch_size + j
            row = int(self._permutation(seed, pos // self.n)[pos % self.n])
            qs, cs = self.questions[row], self.captions[row]
            if qs and (picks[j] < self.vqa_fraction or not cs):
                query, answer = qs[choice[j] % len(qs)]
                out.append(Example(row, answer, query))
            else:
                out.append(Example(row, cs[choice[j] % len(cs)]))
        return out


def gather_visual(visual: torch.Tensor, examples: list[Example]) -> torch.Tensor:
    """The visual inputs of `examples` as float32 (tables may be stored in half precision)."""
    return visual[torch.tensor([e.row for e in examples])].float()
