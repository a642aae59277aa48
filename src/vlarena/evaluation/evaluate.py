"""Evaluation of any model family through its verbs: retrieval, zero-shot classification,
multiple-choice VQA, captioning, size and latency, each metric beside its chance level."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlarena.data.manifest import Dataset
from vlarena.data.templates import fill_caption, fill_label, heldout_prompts
from vlarena.evaluation.metrics import (
    Metric,
    caption_item_scores,
    caption_scores,
    retrieval_hits,
    topk_hits,
)
from vlarena.events import OnEvent, ProgressEvent, ignore
from vlarena.models.base import VLModel

BATCH = 64


@dataclass
class EvalConfig:
    """How much of the test split each metric reads. Token models score one decoder pass per
    (image, candidate) pair, so retrieval pools stay small for them by default."""

    max_images: int = 1000
    caption_choices: int = 10
    retrieval_pools: tuple[int, ...] = (100,)
    retrieval_repeats: int = 1
    generate_images: int = 200
    latency_repeats: int = 10
    seed: int = 0
    metrics: tuple[str, ...] = (
        "caption_choice",
        "retrieval",
        "zeroshot",
        "zeroshot_heldout",
        "vqa",
        "captioning",
    )

    @classmethod
    def quick(cls, images: int = 100) -> EvalConfig:
        """The cheap subset measured at each point of a learning curve."""
        return cls(
            max_images=images, metrics=("caption_choice", "zeroshot", "vqa"), latency_repeats=0
        )


def _batched_scores(
    model: VLModel,
    visual: torch.Tensor,
    candidates: Sequence[Sequence[str]],
    queries: Sequence[str | None] | None = None,
) -> np.ndarray:
    out = []
    for s in range(0, len(candidates), BATCH):
        q = None if queries is None else list(queries[s : s + BATCH])
        out.append(model.score_candidates(visual[s : s + BATCH], candidates[s : s + BATCH], q))
    return torch.cat(out).float().cpu().numpy()


def caption_choice(
    model: VLModel, ds: Dataset, visual: torch.Tensor, cfg: EvalConfig
) -> dict[str, Metric]:
    """Pick the true caption among `caption_choices` (the others: captions of other images)."""
    caps = ds.captions()
    distinct = sorted(set(caps))
    if len(distinct) < cfg.caption_choices:
        return {}
    rng = np.random.default_rng(cfg.seed)
    cands = []
    for cap in caps:
        others: list[str] = []
        while len(others) < cfg.caption_choices - 1:
            c = distinct[rng.integers(len(distinct))]
            if c != cap and c not in others:
                others.append(c)
        cands.append([cap, *others])
    scores = _batched_scores(model, visual, cands)
    hits = topk_hits(scores, np.zeros(len(caps), dtype=int), 1)
    name = f"caption_of_{cfg.caption_choices}"
    out = {name: Metric(float(hits.mean()), 1 / cfg.caption_choices, len(caps), items=hits)}
    return out | hard_caption_choice(model, ds, visual, cfg)


def hard_negatives(ds: Dataset, index: int, count: int, rng: np.random.Generator) -> list[str]:
    """Up to `count` captions that differ from record `index`'s only in structure: its own
    items in other slots (a dataset with slot labels and a caption template), else captions of
    other images of its class (same label); fewer when there are not that many."""
    record, info = ds.records[index], ds.info
    true = record.captions[0]
    if record.labels and info.caption_template and info.slots:
        values = [record.labels[s] for s in info.slots]
        orders = {p for p in itertools.permutations(values) if list(p) != values}
        texts = sorted({fill_caption(info, dict(zip(info.slots, p, strict=True))) for p in orders})
    elif record.label is not None:
        texts = sorted(
            {r.captions[0] for r in ds.records if r.label == record.label and r.captions} - {true}
        )
    else:
        return []
    texts = [t for t in texts if t != true]
    if len(texts) <= count:
        return texts
    return [texts[i] for i in rng.choice(len(texts), count, replace=False)]


def hard_caption_choice(
    model: VLModel, ds: Dataset, visual: torch.Tensor, cfg: EvalConfig
) -> dict[str, Metric]:
    """The true caption among `caption_choices` whose distractors differ only in structure
    (`hard_negatives`): the same items in other slots, or the same class. Images without
    enough such distractors are left out (`n` counts the others)."""
    rng = np.random.default_rng(cfg.seed + 3)
    rows, cands = [], []
    for i, r in enumerate(ds.records):
        if not r.captions:
            continue
        negatives = hard_negatives(ds, i, cfg.caption_choices - 1, rng)
        if len(negatives) == cfg.caption_choices - 1:
            rows.append(i)
            cands.append([r.captions[0], *negatives])
    if not rows:
        return {}
    scores = _batched_scores(model, visual[rows], cands)
    hits = topk_hits(scores, np.zeros(len(rows), dtype=int), 1)
    name = f"hard_caption_of_{cfg.caption_choices}"
    return {name: Metric(float(hits.mean()), 1 / cfg.caption_choices, len(rows), items=hits)}


def _distinct_pool(caps: list[str], size: int, rng: np.random.Generator) -> list[int] | None:
    """`size` images with pairwise different captions (so exactly one text is right)."""
    seen: set[str] = set()
    pool = []
    for i in rng.permutation(len(caps)):
        if caps[i] not in seen:
            seen.add(caps[i])
            pool.append(int(i))
            if len(pool) == size:
                return pool
    return None


def retrieval(
    model: VLModel, ds: Dataset, visual: torch.Tensor, cfg: EvalConfig
) -> dict[str, Metric]:
    """Image→text and text→image recall@1/5/10 within pools of images with distinct captions."""
    caps = ds.captions()
    rng = np.random.default_rng(cfg.seed + 1)
    out: dict[str, Metric] = {}
    for size in cfg.retrieval_pools:
        runs = []
        for _ in range(cfg.retrieval_repeats):
            pool = _distinct_pool(caps, size, rng)
            if pool is None:
                break
            texts = [caps[i] for i in pool]
            scores = _batched_scores(model, visual[pool], [texts] * size)
            runs.append(retrieval_hits(scores))
        if not runs:
            continue
        for name in runs[0]:
            k = int(name.split("_r")[1])
            hits = np.concatenate([r[name] for r in runs])  # the pools' queries, pool by pool
            out[f"{name}@{size}"] = Metric(
                float(hits.mean()), min(1.0, k / size), size * len(runs), items=hits
            )
    return out


def _zeroshot_targets(ds: Dataset) -> list[tuple[int, str | None, int]]:
    """(image row, slot or None, true class index) of each zero-shot item: per slot of a grid
    with a caption template, else per image with a label among the classes."""
    info = ds.info
    classes = list(info.classes)
    out: list[tuple[int, str | None, int]] = []
    for i, r in enumerate(ds.records):
        if r.labels and info.caption_template:
            for slot in info.slots:
                if r.labels.get(slot) in classes:
                    out.append((i, slot, classes.index(r.labels[slot])))
        elif r.label in classes:
            out.append((i, None, classes.index(r.label)))
    return out


def zeroshot_items(ds: Dataset) -> tuple[list[int], list[list[str]], list[int]]:
    """The zero-shot protocol's (image row, candidate prompts, true class index) triples:
    per slot of a grid the caption with that slot's class varied, else the label prompts."""
    info = ds.info
    classes = list(info.classes)
    rows, cands, targets = [], [], []
    for i, slot, target in _zeroshot_targets(ds):
        labels = ds.records[i].labels or {}
        rows.append(i)
        if slot is None:
            cands.append([fill_label(info, c) for c in classes])
        else:
            cands.append([fill_caption(info, {**labels, slot: c}) for c in classes])
        targets.append(target)
    return rows, cands, targets


def heldout_zeroshot_items(ds: Dataset) -> tuple[list[int], list[list[list[str]]], list[int]]:
    """The items of `zeroshot_items`, in its order, with the prompts of every held-out template
    instead (`HELDOUT_*_TEMPLATES`): per item, one list of class prompts per template."""
    info = ds.info
    classes = list(info.classes)
    rows, cands, targets = [], [], []
    for i, slot, target in _zeroshot_targets(ds):
        by_class = [heldout_prompts(info, c, slot) for c in classes]  # (classes, templates)
        rows.append(i)
        cands.append([list(prompts) for prompts in zip(*by_class, strict=True)])
        targets.append(target)
    return rows, cands, targets


def _classification(
    prefix: str, scores: np.ndarray, truth: np.ndarray, classes: int
) -> dict[str, Metric]:
    """Top-1, top-5 and balanced accuracy of class scores (items × classes)."""
    n = len(truth)
    top1, top5 = topk_hits(scores, truth, 1), topk_hits(scores, truth, 5)
    counts = np.bincount(truth, minlength=classes)
    # Where classes are unbalanced, always answering the most frequent one beats 1/C: that is
    # top-1's chance. Balanced accuracy (the mean of the per-class recalls) has chance 1/C
    # whatever the balance; each item weighs 1 / (classes present × its class's count), so
    # the mean of its per-item scores is the balanced accuracy.
    majority = float(counts.max() / n)
    present = int((counts > 0).sum())
    balanced = top1 * n / (present * counts[truth])
    return {
        f"{prefix}_top1": Metric(float(top1.mean()), max(1 / classes, majority), n, items=top1),
        f"{prefix}_top5": Metric(float(top5.mean()), min(1.0, 5 / classes), n, items=top5),
        f"{prefix}_balanced": Metric(float(balanced.mean()), 1 / present, n, items=balanced),
    }


def zeroshot(
    model: VLModel, ds: Dataset, visual: torch.Tensor, cfg: EvalConfig
) -> dict[str, Metric]:
    """Zero-shot classification by the training captions' own template (a label template over
    the classes, or, for images with slots, the caption with one slot's class varied and the
    others kept): `zeroshot_*`."""
    classes = list(ds.info.classes)
    if len(classes) < 2:
        return {}
    rows, cands, targets = zeroshot_items(ds)
    if not rows:
        return {}
    truth = np.array(targets)
    return _classification(
        "zeroshot", _batched_scores(model, visual[rows], cands), truth, len(classes)
    )


def zeroshot_heldout(
    model: VLModel, ds: Dataset, visual: torch.Tensor, cfg: EvalConfig
) -> dict[str, Metric]:
    """Zero-shot classification on the same items as `zeroshot`, by wordings the built-in
    datasets' captions never use (`zeroshot_heldout_*`), ensembled the CLIP way at the score
    level: each class's score is the mean of its scores over the held-out templates (a
    template's shift common to every class leaves the ranking as it is). A separate group, so
    learning curves leave it out: it scores every class under every template."""
    classes = list(ds.info.classes)
    if len(classes) < 2:
        return {}
    rows, heldout, targets = heldout_zeroshot_items(ds)
    if not rows:
        return {}
    per_template = [
        _batched_scores(model, visual[rows], [item[t] for item in heldout])
        for t in range(len(heldout[0]))
    ]
    ensembled = np.mean(per_template, axis=0)  # (items, classes)
    return _classification("zeroshot_heldout", ensembled, np.array(targets), len(classes))


def vqa(model: VLModel, ds: Dataset, visual: torch.Tensor, cfg: EvalConfig) -> dict[str, Metric]:
    """Multiple-choice VQA: the answer among the question's choices, scored given the query."""
    by_width: dict[int, list[tuple[int, str, list[str], int]]] = {}
    for i, r in enumerate(ds.records):
        for q in r.questions:
            if q.choices and q.answer in q.choices:
                choices = list(q.choices)
                by_width.setdefault(len(choices), []).append(
                    (i, q.query, choices, choices.index(q.answer))
                )
    if not by_width:
        return {}
    hits, chance = [], 0.0
    for width, items in by_width.items():
        rows = [i for i, *_ in items]
        scores = _batched_scores(
            model, visual[rows], [c for _, _, c, _ in items], [q for _, q, _, _ in items]
        )
        hits.append(topk_hits(scores, np.array([t for *_, t in items]), 1))
        chance += len(items) / width
    per_item = np.concatenate(hits)
    total = len(per_item)
    return {"vqa_accuracy": Metric(float(per_item.mean()), chance / total, total, items=per_item)}


def captioning(
    model: VLModel,
    ds: Dataset,
    visual: torch.Tensor,
    cfg: EvalConfig,
    train_captions: Sequence[str] = (),
) -> tuple[dict[str, Metric], list[str]]:
    """CIDEr and BLEU-4 of generated captions; chance: captions of random training images."""
    n = min(cfg.generate_images, len(ds))
    refs = [list(r.captions) for r in ds.records[:n]]
    if n == 0 or not all(refs):
        return {}, []
    hyps: list[str] = []
    for s in range(0, n, BATCH):
        hyps += model.generate(visual[s : min(n, s + BATCH)])
    scores, cider = caption_item_scores(hyps, refs)
    pool = list(train_captions) or [c for r in refs for c in r]
    rng = np.random.default_rng(cfg.seed + 2)
    chance = caption_scores([pool[rng.integers(len(pool))] for _ in range(n)], refs)
    out = {
        name: Metric(
            value, chance[name], n, binomial=False, items=cider if name == "cider" else None
        )
        for name, value in scores.items()
    }
    ceiling = model.decode_targets([r[0] for r in refs])
    if ceiling is not None:
        for name, value in caption_scores(ceiling, refs).items():
            out[f"decoder_ceiling_{name}"] = Metric(value, chance[name], n, binomial=False)
    return out, hyps


def latency_ms(model: VLModel, visual: torch.Tensor, repeats: int) -> float:
    """Milliseconds to produce text for one image (batch 1, X-encoder features given)."""
    one = visual[:1]
    model.generate(one)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        model.generate(one)
    return 1000 * (time.perf_counter() - started) / repeats


@torch.no_grad()
def evaluate_model(
    model: VLModel,
    ds: Dataset,
    visual: torch.Tensor,
    cfg: EvalConfig | None = None,
    *,
    train_captions: Sequence[str] = (),
    on_event: OnEvent = ignore,
) -> dict[str, Any]:
    """All metrics of `model` on `ds` (whose visual inputs are `visual`), as plain dicts;
    progress is reported before the first group of metrics and after each (where a job may
    stop)."""
    cfg = cfg or EvalConfig()
    was_training = model.training
    model.eval()
    n = min(cfg.max_images, len(ds))
    ds = dataclasses.replace(ds, records=ds.records[:n])
    visual = visual[:n].to(model.device)
    metrics: dict[str, Metric] = {}
    samples: list[str] = []
    captioned = all(r.captions for r in ds.records)
    steps: list[tuple[str, Callable[[], dict[str, Metric]]]] = []
    if "caption_choice" in cfg.metrics and captioned:
        steps.append(("caption_choice", lambda: caption_choice(model, ds, visual, cfg)))
    if "retrieval" in cfg.metrics and captioned:
        steps.append(("retrieval", lambda: retrieval(model, ds, visual, cfg)))
    if "zeroshot" in cfg.metrics:
        steps.append(("zeroshot", lambda: zeroshot(model, ds, visual, cfg)))
    if "zeroshot_heldout" in cfg.metrics:
        steps.append(("zeroshot_heldout", lambda: zeroshot_heldout(model, ds, visual, cfg)))
    if "vqa" in cfg.metrics:
        steps.append(("vqa", lambda: vqa(model, ds, visual, cfg)))
    if "captioning" in cfg.metrics and captioned:

        def captions() -> dict[str, Metric]:
            nonlocal samples
            caption_metrics, samples = captioning(model, ds, visual, cfg, train_captions)
            return caption_metrics

        steps.append(("captioning", captions))
    on_event(ProgressEvent("evaluate", 0, len(steps), "metric groups"))
    for done, (_name, measure) in enumerate(steps, start=1):
        metrics |= measure()
        on_event(ProgressEvent("evaluate", done, len(steps), "metric groups"))
    result: dict[str, Any] = {
        "metrics": {k: m.to_dict() for k, m in metrics.items()},
        # Per-item scores, for paired intervals between models evaluated on the same items.
        "items": {k: m.items.tolist() for k, m in metrics.items() if m.items is not None},
        "trainable_parameters": model.count_parameters(True),
        "total_parameters": model.count_parameters(False),
        "images": n,
        "samples": [
            {"id": r.id, "generated": h, "references": list(r.captions)}
            for r, h in zip(ds.records[:10], samples[:10], strict=False)
        ],
    }
    if cfg.latency_repeats:
        result["latency_ms_per_image"] = latency_ms(model, visual, cfg.latency_repeats)
    model.train(was_training)
    return result


def flat_values(result: dict[str, Any]) -> dict[str, float]:
    """{metric name: value} of an `evaluate_model` result."""
    return {k: m["value"] for k, m in result["metrics"].items()}
