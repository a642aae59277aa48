"""Zero-shot with held-out prompts: the same items as the in-template protocol, scored with
wordings outside the caption template and ensembled over the held-out templates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vlarena.data.dataset_info import DatasetInfo
from vlarena.data.fashion_grid import CLASSES, caption_template, grid_slots
from vlarena.data.manifest import Dataset, Record
from vlarena.data.templates import HELDOUT_LABEL_TEMPLATES, fill_caption
from vlarena.evaluation.evaluate import (
    EvalConfig,
    heldout_zeroshot_items,
    zeroshot,
    zeroshot_heldout,
    zeroshot_items,
)

SLOTS = tuple(slot for slot, _ in grid_slots(2))
GRID = DatasetInfo(
    name="grid",
    caption_template=caption_template(2),
    classes=tuple(CLASSES),
    slots=SLOTS,
    slot_phrases=dict(grid_slots(2)),
)


def grids(n: int) -> Dataset:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        labels = {s: CLASSES[int(rng.integers(len(CLASSES)))] for s in SLOTS}
        caption = fill_caption(GRID, labels)
        records.append(Record(id=f"g{i}", image="/x.png", captions=(caption,), labels=labels))
    return Dataset(GRID, records, Path("/nowhere/manifest.jsonl"), "0" * 16)


class TemplateParrot:
    """Knows its images' training captions word for word and nothing else: what a model that
    memorised the caption template looks like (other texts score at random)."""

    def __init__(self, ds: Dataset) -> None:
        self.captions = [r.captions[0] for r in ds.records]
        self.rng = np.random.default_rng(1)

    def score_candidates(self, visual, candidates, queries=None):
        rows = [
            [float(c == self.captions[i]) + 1e-3 * self.rng.random() for c in cands]
            for i, cands in zip(visual[:, 0].long().tolist(), candidates, strict=True)
        ]
        return torch.tensor(rows, dtype=torch.float64)


def test_a_model_that_knows_only_the_caption_template_fails_held_out_prompts():
    ds = grids(150)
    visual = torch.arange(len(ds), dtype=torch.float32)[:, None]
    parrot = TemplateParrot(ds)
    m = zeroshot(parrot, ds, visual, EvalConfig()) | zeroshot_heldout(
        parrot, ds, visual, EvalConfig()
    )
    top1, heldout = m["zeroshot_top1"], m["zeroshot_heldout_top1"]
    assert top1.value == 1.0
    assert heldout.value < 0.2  # chance: 1/10
    assert heldout.n == top1.n == 4 * len(ds) and heldout.chance == top1.chance
    assert heldout.items is not None and len(heldout.items) == heldout.n
    assert {"zeroshot_heldout_top5", "zeroshot_heldout_balanced"} <= set(m)


def test_held_out_items_are_the_in_template_items_with_every_template_per_class():
    ds = grids(5)
    rows, cands, targets = zeroshot_items(ds)
    held_rows, held, held_targets = heldout_zeroshot_items(ds)
    assert (held_rows, held_targets) == (rows, targets)
    for (row, per_template, target), slot in zip(
        zip(held_rows, held, held_targets, strict=True), SLOTS * len(ds), strict=True
    ):
        assert len(per_template) == 3 and all(len(t) == len(CLASSES) for t in per_template)
        true_class = ds.records[row].labels[slot]
        assert CLASSES[target] == true_class
        position = GRID.slot_phrases[slot]
        assert all(true_class in t[target] and position in t[target] for t in per_template)
        assert not set(per_template[0]) & set(cands[0])


class WrongAloneRightTogether:
    """On each held-out template, the true class scores 2 and one wrong class (another per
    template) 2.5: every template alone is wrong, as are a vote and the maximum; only the mean
    over templates picks the true class. Other prompts score nothing."""

    def __init__(self, labels: list[int], classes: int) -> None:
        self.labels, self.classes = labels, classes
        self.openings = [t.split("{")[0].removesuffix("a ") for t in HELDOUT_LABEL_TEMPLATES]

    def score_candidates(self, visual, candidates, queries=None):
        rows = []
        for i, cands in zip(visual[:, 0].long().tolist(), candidates, strict=True):
            scores = [0.0] * len(cands)
            for t, opening in enumerate(self.openings):
                if cands[0].startswith(opening):
                    scores[self.labels[i]] = 2.0
                    scores[(self.labels[i] + 1 + t) % self.classes] = 2.5
            rows.append(scores)
        return torch.tensor(rows)


def test_held_out_scores_are_the_mean_over_templates():
    info = DatasetInfo(name="items", label_template="a {label}", classes=tuple(CLASSES))
    labels = [i % len(CLASSES) for i in range(40)]
    records = [Record(id=f"r{i}", image="/x.png", label=CLASSES[k]) for i, k in enumerate(labels)]
    ds = Dataset(info, records, Path("/nowhere/manifest.jsonl"), "0" * 16)
    visual = torch.arange(len(ds), dtype=torch.float32)[:, None]
    model = WrongAloneRightTogether(labels, len(CLASSES))
    m = zeroshot(model, ds, visual, EvalConfig()) | zeroshot_heldout(
        model, ds, visual, EvalConfig()
    )
    assert m["zeroshot_top1"].value == 0.0  # ties count against the target
    assert m["zeroshot_heldout_top1"].value == 1.0
    assert m["zeroshot_heldout_balanced"].value == 1.0
