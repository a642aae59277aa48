"""What the report measures on the trained models themselves: where they look (cross-attention
of the token VLM, the VL-JEPA predictor's attention), where their embeddings land, which
classes zero-shot classification confuses, and what a request costs at batch 1."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeGuard, overload

import numpy as np
import torch
import torch.nn.functional as F

from vlarena.data.images import load_image
from vlarena.data.manifest import Dataset, DatasetInfo
from vlarena.data.tokenizer import Vocabulary
from vlarena.evaluation.evaluate import zeroshot_items
from vlarena.evaluation.report.projection import pca, tsne
from vlarena.models.base import VLModel


# --- what the probes need of a family beyond VLModel --------------------------------------------
class _HasVocabulary(Protocol):
    @property
    def vocab(self) -> Vocabulary: ...


class _AttentionCaptioner(_HasVocabulary, Protocol):
    """A family whose captions come with their cross-attention (the token VLM)."""

    def generate(
        self, visual: torch.Tensor, *, return_attention: Literal[True]
    ) -> tuple[list[str], list[torch.Tensor]]: ...


class _EmbeddingPredictor(_HasVocabulary, Protocol):
    """A family that predicts text embeddings from images (VL-JEPA)."""

    @overload
    def predict_embedding(
        self,
        visual: torch.Tensor,
        queries: Sequence[str | None] | None = None,
        *,
        need_weights: Literal[False] = False,
    ) -> torch.Tensor: ...
    @overload
    def predict_embedding(
        self,
        visual: torch.Tensor,
        queries: Sequence[str | None] | None = None,
        *,
        need_weights: Literal[True],
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor: ...


def _has_vocabulary(model: VLModel) -> TypeGuard[_HasVocabulary]:
    return hasattr(model, "vocab")


def _shows_cross_attention(model: VLModel) -> TypeGuard[_AttentionCaptioner]:
    return "return_attention" in inspect.signature(model.generate).parameters


def _predicts_embeddings(model: VLModel) -> TypeGuard[_EmbeddingPredictor]:
    return hasattr(model, "predict_embedding")


# --- where a slot's cell lies among the visual tokens -------------------------------------------
def slot_cells(slots: Sequence[str], num_tokens: int) -> dict[str, list[int]] | None:
    """The visual-token indices each slot of a square grid covers (slots in row-major order),
    where the token grid divides evenly into the slot grid (4×4 tokens, 2×2 slots)."""
    grid, side = math.isqrt(len(slots)), math.isqrt(num_tokens)
    if not slots or grid * grid != len(slots) or side * side != num_tokens or side % grid:
        return None
    block = side // grid
    cells = {}
    for index, slot in enumerate(slots):
        r, c = divmod(index, grid)
        cells[slot] = [
            (r * block + i) * side + c * block + j for i in range(block) for j in range(block)
        ]
    return cells


def thumbnail(path: str, size: int = 128) -> list[list[int]]:
    """An image as a grey (size, size) uint8 grid, for figures."""
    grey = (load_image(path, size).mean(0) + 1) * 127.5
    return grey.clip(0, 255).astype(np.uint8).tolist()


# --- token VLM: cross-attention per generated token ---------------------------------------------
def _token_pieces(model: _HasVocabulary, text: str) -> list[str]:
    ids = model.vocab.encode(text, bos=False, eos=False)
    return [model.vocab.decode([i]) or "·" for i in ids]


def cross_attention(
    model: VLModel, ds: Dataset, visual: torch.Tensor, images: int = 2, stats_images: int = 64
) -> dict[str, Any] | None:
    """Each generated token's cross-attention over the visual tokens (token VLM), for a few
    test images, and how much attention the class words of each caption part put on the cell
    the part names (chance: the cell's share of the tokens)."""
    if not _shows_cross_attention(model):
        return None  # the family has no cross-attention to show
    texts, maps = model.generate(visual[:stats_images], return_attention=True)
    info = ds.info
    cells = slot_cells(info.slots, visual.shape[1])
    examples = []
    for i in range(min(images, len(texts))):
        pieces = _token_pieces(model, texts[i])
        weights = maps[i].float().cpu().numpy()
        if len(pieces) != len(weights):  # decoding does not round-trip: label by position
            pieces = [f"t{k}" for k in range(len(weights))]
        examples.append(
            {
                "id": ds.records[i].id,
                "image": thumbnail(ds.records[i].image),
                "generated": texts[i],
                "tokens": pieces,
                "weights": weights.round(4).tolist(),  # (T, Nv)
            }
        )
    out: dict[str, Any] = {"tokensSide": math.isqrt(visual.shape[1]), "examples": examples}
    if cells:
        out["alignment"] = _caption_alignment(model, info, texts, maps, cells)
    return out


def _caption_alignment(
    model: _HasVocabulary,
    info: DatasetInfo,
    texts: list[str],
    maps: list[torch.Tensor],
    cells: dict[str, list[int]],
) -> dict[str, float] | None:
    """Mean attention mass that the class-word tokens of "a <class> <position>" parts put on
    the named position's cell."""
    phrase_slot = {phrase: slot for slot, phrase in info.slot_phrases.items()}
    masses = []
    for text, weights in zip(texts, maps, strict=True):
        ids = model.vocab.encode(text, bos=False, eos=False)
        if len(ids) != len(weights):
            continue
        commas = [k for k, i in enumerate(ids) if model.vocab.decode([i]) == ","]
        start = 0
        for end in [*commas, len(ids)]:
            words = model.vocab.decode(ids[start:end]).strip()
            for phrase, slot in phrase_slot.items():
                if words.endswith(" " + phrase):
                    n_phrase = len(model.vocab.encode(phrase, bos=False, eos=False))
                    rows = weights[start + 1 : end - n_phrase]  # after "a"/"an", before the phrase
                    if len(rows):
                        masses.append(float(rows[:, cells[slot]].sum(-1).mean()))
                    break
            start = end + 1
    if not masses:
        return None
    share = len(next(iter(cells.values()))) / sum(len(c) for c in cells.values())
    return {"massOnNamedCell": float(np.mean(masses)), "chance": share, "n": len(masses)}


# --- VL-JEPA: the predictor's attention to visual tokens ----------------------------------------
@torch.no_grad()
def predictor_attention(
    model: VLModel, ds: Dataset, visual: torch.Tensor, images: int = 2, stats_images: int = 64
) -> dict[str, Any] | None:
    """The predictor's attention from the query tokens to the visual tokens, per layer (mean
    over heads and query tokens), for each slot question ("what is at the top left?"); and the
    mass the last layer puts on the asked cell over `stats_images` images."""
    if not _predicts_embeddings(model):
        return None
    info = ds.info
    nv = visual.shape[1]
    cells = slot_cells(info.slots, nv)
    rows = list(range(min(stats_images, len(ds))))
    asked: list[tuple[int, str, str]] = []  # (image row, slot, query)
    for i in rows:
        for q in ds.records[i].questions:
            slot = next(
                (s for s, p in info.slot_phrases.items() if q.query.endswith(f"{p}?")), None
            )
            asked.append((i, slot or "", q.query))
    if not asked:
        _, weights = model.predict_embedding(visual[rows], need_weights=True)
        image_maps = torch.stack([w.mean(1).mean(1) for w in weights], 1)  # (B, L, Nv)
        return {
            "tokensSide": math.isqrt(nv),
            "examples": [
                {
                    "id": ds.records[i].id,
                    "image": thumbnail(ds.records[i].image),
                    "queries": [{"query": None, "layers": image_maps[i].numpy().round(4).tolist()}],
                }
                for i in rows[:images]
            ],
        }
    per_layer = []
    for s in range(0, len(asked), 64):
        chunk = asked[s : s + 64]
        _, weights = model.predict_embedding(
            visual[[i for i, _, _ in chunk]], [q for _, _, q in chunk], need_weights=True
        )
        # rows: query tokens (positions ≥ Nv that are not padding), columns: visual tokens
        lengths = [len(model.vocab.encode(q, bos=False, eos=False)) for _, _, q in chunk]
        layer_maps = []
        for w in weights:  # (B, h, T, T)
            w = w.mean(1)[:, nv:, :nv]  # (B, Tq, Nv)
            mask = torch.zeros(w.shape[:2])
            for b, n in enumerate(lengths):
                mask[b, :n] = 1
            m = (w * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            layer_maps.append(m / m.sum(-1, keepdim=True).clamp(min=1e-12))  # over visual tokens
        per_layer.append(torch.stack(layer_maps, 1))  # (B, L, Nv)
    maps = torch.cat(per_layer).float().numpy()
    examples = []
    for i in rows[:images]:
        examples.append(
            {
                "id": ds.records[i].id,
                "image": thumbnail(ds.records[i].image),
                "queries": [
                    {"query": q, "slot": slot, "layers": maps[k].round(4).tolist()}
                    for k, (j, slot, q) in enumerate(asked)
                    if j == i
                ],
            }
        )
    out: dict[str, Any] = {"tokensSide": math.isqrt(nv), "examples": examples}
    if cells:
        masses = [
            float(maps[k, -1, cells[slot]].sum()) for k, (_, slot, _) in enumerate(asked) if slot
        ]
        share = len(next(iter(cells.values()))) / nv
        if masses:
            out["alignment"] = {
                "massOnAskedCell": float(np.mean(masses)),
                "chance": share,
                "n": len(masses),
            }
    return out


# --- embedding maps -----------------------------------------------------------------------------
def categories(ds: Dataset) -> tuple[str, list[str]]:
    """What colours the embedding map: a record's label, else the class in its first slot."""
    if all(r.label for r in ds.records):
        return "label", [str(r.label) for r in ds.records]
    slot = ds.info.slots[0] if ds.info.slots else None
    if slot and all(r.labels and slot in r.labels for r in ds.records):
        phrase = ds.info.slot_phrases.get(slot, slot)
        return f"class at the {phrase}", [r.labels[slot] for r in ds.records if r.labels]
    return "none", ["–"] * len(ds)


@torch.no_grad()
def embedding_map(
    model: VLModel, ds: Dataset, visual: torch.Tensor, points: int = 200, seed: int = 0
) -> dict[str, Any] | None:
    """PCA and t-SNE of predicted embeddings (from images) beside target embeddings (from their
    captions), unit-normalised, for a model that predicts embeddings."""
    if not _predicts_embeddings(model) or not all(r.captions for r in ds.records):
        return None
    n = min(points, len(ds))
    captions = [r.captions[0] for r in ds.records[:n]]
    pred = F.normalize(model.predict_embedding(visual[:n]), dim=-1).float().cpu().numpy()
    target = F.normalize(model.encode_text(captions), dim=-1).float().cpu().numpy()
    both = np.concatenate([pred, target])
    flat, explained = pca(both, 2)
    label, cats = categories(ds)
    cos = (pred * target).sum(1)
    return {
        "points": n,
        "colouredBy": label,
        "categories": cats[:n],
        "captions": captions,
        "kinds": ["predicted"] * n + ["target"] * n,
        "pca": flat.round(4).tolist(),
        "pcaExplained": explained.round(4).tolist(),
        "tsne": tsne(both, seed=seed).round(3).tolist(),
        "meanCosinePredictedTarget": float(cos.mean()),
    }


# --- zero-shot confusion ----------------------------------------------------------------------
@torch.no_grad()
def zeroshot_confusion(
    model: VLModel, ds: Dataset, visual: torch.Tensor, images: int = 200, batch: int = 64
) -> dict[str, Any] | None:
    """Counts (true class × predicted class) of zero-shot classification on `images` images."""
    classes = list(ds.info.classes)
    if len(classes) < 2:
        return None
    sub = ds.records[: min(images, len(ds))]
    rows, cands, targets = zeroshot_items(dataclasses.replace(ds, records=sub))
    if not rows:
        return None
    preds = []
    for s in range(0, len(rows), batch):
        scores = model.score_candidates(visual[rows[s : s + batch]], cands[s : s + batch])
        preds += scores.argmax(-1).tolist()
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(targets, preds, strict=True):
        counts[t, p] += 1
    return {
        "classes": classes,
        "counts": counts.tolist(),
        "accuracy": float(np.trace(counts) / counts.sum()),
        "n": int(counts.sum()),
    }


# --- latency ----------------------------------------------------------------------------------
@torch.no_grad()
def request_latency(
    models: Mapping[str, tuple[VLModel, torch.Tensor]], ds: Dataset, repeats: int = 5
) -> dict[str, dict[str, float]]:
    """Per family, median milliseconds per request at batch 1 (X-encoder features given): a
    caption, a choice among the dataset's class prompts (zero-shot), and, for embedding
    predictors, the embedding alone (what retrieval needs). `models`: family → (model, its
    visual inputs of `ds`)."""
    _, cands, _ = zeroshot_items(ds)
    prompts = cands[0] if cands else [r.captions[0] for r in ds.records[:10]]
    jobs: dict[tuple[str, str], Callable[[], object]] = {}
    for family, (model, visual) in models.items():
        one = visual[:1]
        jobs[family, "caption"] = functools.partial(model.generate, one)
        jobs[family, "classify"] = functools.partial(model.score_candidates, one, [prompts])
        if _predicts_embeddings(model):
            jobs[family, "embed"] = functools.partial(model.predict_embedding, one)
    for job in jobs.values():
        job()  # warm-up (and text-embedding caches filled)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in jobs}
    # Round-robin over families and kinds: load from elsewhere falls on all of them alike.
    for _ in range(repeats):
        for key, job in jobs.items():
            started = time.perf_counter()
            job()
            times[key].append(1000 * (time.perf_counter() - started))
    out: dict[str, dict[str, float]] = {f: {"classifyCandidates": len(prompts)} for f in models}
    for (family, kind), values in times.items():
        out[family][kind] = statistics.median(values)
    return out


def decode_steps(model: VLModel, texts: Sequence[str]) -> float | None:
    """Mean autoregressive steps per generated text (its tokens and the end token)."""
    if not texts or not _has_vocabulary(model):
        return None
    return float(np.mean([len(model.vocab.encode(t, bos=False, eos=False)) + 1 for t in texts]))
