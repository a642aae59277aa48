"""Hard-negative caption choice tests structure: a scorer blind to slot order is at chance."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vlarena.data.dataset_info import DatasetInfo
from vlarena.data.fashion_grid import CLASSES, caption_template, grid_slots
from vlarena.data.manifest import Dataset, Record
from vlarena.data.templates import fill_caption
from vlarena.evaluation.evaluate import EvalConfig, caption_choice, hard_negatives

SLOTS = tuple(slot for slot, _ in grid_slots(2))
INFO = DatasetInfo(
    name="grid", caption_template=caption_template(2), classes=tuple(CLASSES), slots=SLOTS
)


def grids(n: int) -> Dataset:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        labels = {s: CLASSES[int(rng.integers(len(CLASSES)))] for s in SLOTS}
        records.append(
            Record(
                id=f"g{i}", image="/x.png", captions=(fill_caption(INFO, labels),), labels=labels
            )
        )
    return Dataset(INFO, records, Path("/nowhere/manifest.jsonl"), "0" * 16)


class BagOfWords:
    """Scores a caption by whether it names the image's items, in any order; ties at random
    (a model that cannot see order guesses among the orders)."""

    def __init__(self, ds: Dataset) -> None:
        self.bags = [sorted(r.captions[0].replace(",", "").split()) for r in ds.records]
        self.rng = np.random.default_rng(1)

    def score_candidates(self, visual, candidates, queries=None):
        rows = []
        for i, cands in zip(visual[:, 0].long().tolist(), candidates, strict=True):
            rows.append([float(sorted(c.replace(",", "").split()) == self.bags[i]) for c in cands])
        scores = torch.tensor(rows, dtype=torch.float64)
        return scores + 1e-3 * torch.from_numpy(self.rng.random(scores.shape))


def test_hard_negatives_are_the_same_items_in_other_slots():
    ds = grids(50)
    rec = ds.records[0]
    for text in hard_negatives(ds, 0, 9, np.random.default_rng(0)):
        assert text != rec.captions[0]
        assert sorted(text.replace(",", "").split()) == sorted(
            rec.captions[0].replace(",", "").split()
        )


def test_a_scorer_blind_to_order_is_at_chance_on_hard_negatives_only():
    ds = grids(600)
    visual = torch.arange(len(ds), dtype=torch.float32)[:, None]
    metrics = caption_choice(BagOfWords(ds), ds, visual, EvalConfig())
    random, hard = metrics["caption_of_10"], metrics["hard_caption_of_10"]
    assert random.value > 0.9  # random distractors name other items: easy without order
    # hard ones are the same items reordered: chance (1/10) within three standard errors
    assert 400 < hard.n < 600  # grids with a repeated pair or more have too few orders
    se = math.sqrt(0.1 * 0.9 / hard.n)
    assert abs(hard.value - 0.1) < 3 * se, hard
    assert hard.items is not None and len(hard.items) == hard.n


class AlwaysFirstClass:
    """Answers the same class for every image: what an untrained model often does."""

    def score_candidates(self, visual, candidates, queries=None):
        return torch.tensor([[1.0] + [0.0] * (len(c) - 1) for c in candidates])


def test_unbalanced_classes_raise_zero_shot_chance_to_the_majority_share():
    from vlarena.evaluation.evaluate import zeroshot

    info = DatasetInfo(name="cats", label_template="a {label}", classes=("a", "b", "c", "d"))
    labels = ["a"] * 70 + ["b"] * 10 + ["c"] * 10 + ["d"] * 10
    records = [Record(id=f"r{i}", image="/x.png", label=lab) for i, lab in enumerate(labels)]
    ds = Dataset(info, records, Path("/nowhere/manifest.jsonl"), "0" * 16)
    visual = torch.zeros(len(records), 1)
    m = zeroshot(AlwaysFirstClass(), ds, visual, EvalConfig())
    top1, balanced = m["zeroshot_top1"], m["zeroshot_balanced"]
    assert top1.value == 0.7 and top1.chance == 0.7 and top1.z == 0  # no better than constant
    assert balanced.value == 0.25 and balanced.chance == 0.25  # one class of four recalled
    assert balanced.items is not None and balanced.items.mean() == 0.25
