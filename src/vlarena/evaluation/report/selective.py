"""Selective decoding (VL-JEPA paper, section on it): over a stream of frames, embed every
frame, cut the stream into segments by temporally constrained Ward clustering and decode text
once per segment; compared with decoding at fixed rates, as CIDEr against decoding operations.

The stream benchmark has a fixed definition (`StreamSpec`): 64-frame `fashion-grid` streams
whose segment lengths are drawn uniformly from [4, 16] frames (the last one cut at the stream's
end), each segment one test grid and its caption, every frame of a segment the grid shifted by
a few pixels with Gaussian noise on top.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vlarena.data.fashion_grid import CLASSES, ITEM_SIZE, caption_template, grid_slots, item_pool
from vlarena.data.templates import fill_template
from vlarena.errors import UserInputError
from vlarena.evaluation.metrics import caption_scores
from vlarena.models.base import VLModel

REPRESENTATIONS = ("mean", "midpoint")
# Decoding rates of the uniform baseline (one decode every `r` frames) and segment counts of
# the selective curve; both end at one decode per frame.
UNIFORM_EVERY = (64, 32, 16, 8, 6, 4, 3, 2, 1)
SELECTIVE_SEGMENTS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32, 48, 64)


@dataclass(frozen=True)
class StreamSpec:
    """The fixed stream definition; change it only on purpose (results stop being comparable)."""

    frames: int = 64
    min_segment: int = 4
    max_segment: int = 16
    grid: int = 2
    split: str = "test"  # Fashion-MNIST items the grids draw from
    max_shift: int = 4  # pixels at the encoder's input size, in x and y independently
    noise: float = 0.05  # std of Gaussian noise on pixels in [-1, 1]


@dataclass
class Stream:
    """One stream: frames (F, 3, S, S) in [-1, 1], where its segments start, their captions."""

    frames: np.ndarray
    starts: list[int]
    captions: list[str]

    def frame_captions(self) -> list[str]:
        """The reference caption of every frame."""
        return [self.captions[i] for i in segment_ids(self.starts, len(self.frames))]


def segment_ids(starts: Sequence[int], frames: int) -> np.ndarray:
    """The segment index of every frame, given where segments start (the first at 0)."""
    ids = np.zeros(frames, dtype=np.int64)
    for start in starts[1:]:
        ids[start:] += 1
    return ids


def grid_mosaic(images: np.ndarray, items: np.ndarray, grid: int) -> np.ndarray:
    """`grid`×`grid` Fashion-MNIST items as one (grid*28, grid*28) uint8 mosaic, row-major."""
    tiles = images[items].reshape(grid, grid, ITEM_SIZE, ITEM_SIZE)
    return tiles.transpose(0, 2, 1, 3).reshape(grid * ITEM_SIZE, grid * ITEM_SIZE)


def _frame(mosaic: np.ndarray, size: int, shift: tuple[int, int], noise: np.ndarray) -> np.ndarray:
    """One perturbed frame (3, size, size) in [-1, 1], preprocessed as `load_image` does."""
    rgb = Image.fromarray(mosaic).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    dy, dx = shift
    moved = np.full_like(pixels, -1.0)  # Fashion-MNIST's background is black
    ys, yd = (
        (slice(0, size - dy), slice(dy, size))
        if dy >= 0
        else (slice(-dy, size), slice(0, size + dy))
    )
    xs, xd = (
        (slice(0, size - dx), slice(dx, size))
        if dx >= 0
        else (slice(-dx, size), slice(0, size + dx))
    )
    moved[:, yd, xd] = pixels[:, ys, xs]
    return np.clip(moved + noise, -1.0, 1.0)


def make_streams(
    count: int, seed: int, image_size: int, spec: StreamSpec | None = None
) -> list[Stream]:
    """`count` streams, the same for the same (count, seed, image_size, spec)."""
    spec = spec or StreamSpec()
    images, labels = item_pool(spec.split)
    slots = [slot for slot, _ in grid_slots(spec.grid)]
    template = caption_template(spec.grid)
    streams = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        starts, total = [], 0
        while total < spec.frames:
            starts.append(total)
            total += int(rng.integers(spec.min_segment, spec.max_segment + 1))
        frames = np.empty((spec.frames, 3, image_size, image_size), dtype=np.float32)
        captions = []
        ids = segment_ids(starts, spec.frames)
        for segment in range(len(starts)):
            items = rng.integers(0, len(images), size=spec.grid**2)
            mosaic = grid_mosaic(images, items, spec.grid)
            captions.append(
                fill_template(
                    template, {s: CLASSES[labels[i]] for s, i in zip(slots, items, strict=True)}
                )
            )
            for f in np.flatnonzero(ids == segment):
                dy, dx = (int(v) for v in rng.integers(-spec.max_shift, spec.max_shift + 1, 2))
                noise = rng.normal(0.0, spec.noise, frames.shape[1:]).astype(np.float32)
                frames[f] = _frame(mosaic, image_size, (dy, dx), noise)
        streams.append(Stream(frames, starts, captions))
    return streams


# --- segmentation -----------------------------------------------------------------------------
def ward_merge_order(embeddings: np.ndarray) -> list[int]:
    """Temporally constrained agglomerative clustering with Ward's criterion.

    Starting from one cluster per frame, repeatedly merge the two *adjacent* clusters whose
    merge raises the within-cluster sum of squares least (n_a n_b / (n_a + n_b) ‖μ_a − μ_b‖²).
    Returns the boundaries (frame index where the right cluster starts) in the order they
    were removed; keeping the last k−1 of them gives k segments.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    starts = list(range(len(x)))
    sizes = [1] * len(x)
    means = [row.copy() for row in x]
    removed = []
    while len(starts) > 1:
        costs = [
            sizes[i]
            * sizes[i + 1]
            / (sizes[i] + sizes[i + 1])
            * float(((means[i] - means[i + 1]) ** 2).sum())
            for i in range(len(starts) - 1)
        ]
        i = int(np.argmin(costs))
        n = sizes[i] + sizes[i + 1]
        means[i] = (sizes[i] * means[i] + sizes[i + 1] * means[i + 1]) / n
        sizes[i] = n
        removed.append(starts[i + 1])
        del starts[i + 1], sizes[i + 1], means[i + 1]
    return removed


def segment_starts(merge_order: Sequence[int], segments: int) -> list[int]:
    """Segment starts for `segments` clusters, from `ward_merge_order`'s result."""
    frames = len(merge_order) + 1
    segments = max(1, min(segments, frames))
    return [0, *sorted(merge_order[frames - segments :])]


def uniform_starts(frames: int, every: int) -> list[int]:
    """Fixed-rate windows: a decode every `every` frames."""
    return list(range(0, frames, every))


# --- the benchmark ----------------------------------------------------------------------------
@dataclass
class SelectiveConfig:
    """How big the benchmark is; the stream definition itself is `StreamSpec`."""

    # Ratios at equal CIDEr compare curves that are close near the top: with 16 streams
    # (~100 segments) sampling noise alone can hide a 10× gap, with 64 it no longer does.
    streams: int = 64
    seed: int = 0
    representation: str = "mean"  # decode each segment's mean embedding, or its midpoint frame
    spec: StreamSpec = StreamSpec()

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise UserInputError(
                f"representation must be one of {', '.join(REPRESENTATIONS)}, got {self.representation!r}"
            )
        if self.streams < 1:
            raise UserInputError("selective decoding needs at least one stream")


FrameEncoder = Callable[[np.ndarray], np.ndarray]  # frames (F, 3, S, S) -> visual tokens


@runtime_checkable
class _EmbeddingDecoder(Protocol):
    """What the benchmark needs of a family beyond VLModel: VL-JEPA's predicted embeddings and
    its Y-decoder."""

    def predict_embedding(self, visual: torch.Tensor) -> torch.Tensor: ...
    def decode_embeddings(self, embeddings: torch.Tensor) -> list[str]: ...


def _embedding_decoder(model: VLModel) -> _EmbeddingDecoder:
    if not isinstance(model, _EmbeddingDecoder):
        raise TypeError(
            "selective decoding needs a model that predicts and decodes embeddings, "
            f"not a {model.family} model"
        )
    return model


@torch.no_grad()
def frame_embeddings(
    model: VLModel, frames: np.ndarray, encode: FrameEncoder | None = None, batch: int = 64
) -> np.ndarray:
    """Unit-norm predicted embeddings (F, D) of frames (F, 3, S, S). A frozen X-encoder's
    visual tokens come from `encode` (the caller's feature path, so frames are encoded as the
    training features were); a trainable one reads the pixels."""
    if model.x_encoder.frozen and encode is None:
        raise ValueError("a frozen X-encoder needs `encode` to turn frames into visual tokens")
    predict = _embedding_decoder(model).predict_embedding
    out = []
    for s in range(0, len(frames), batch):
        chunk = frames[s : s + batch]
        visual = torch.from_numpy(encode(chunk) if encode is not None else chunk)
        out.append(F.normalize(predict(visual.to(model.device).float()), dim=-1).cpu())
    return torch.cat(out).numpy()


Plan = list[list[int]]  # segment starts per stream


def _segments(plan: Plan, frames: int) -> list[tuple[int, int, int]]:
    """(stream, first frame, end frame) of every segment of a plan."""
    return [
        (i, a, b) for i, starts in enumerate(plan) for a, b in itertools.pairwise([*starts, frames])
    ]


def _decode_segments(
    model: VLModel,
    embeddings: list[np.ndarray],
    segments: Sequence[tuple[int, int, int]],
    how: str,
    batch: int = 256,
) -> dict[tuple[int, int, int], str]:
    """The text of each distinct segment, decoded once from its mean embedding or the
    embedding of its middle frame (segments that several plans share decode once)."""
    keys = sorted(set(segments))
    vectors = np.stack(
        [
            embeddings[i][a:b].mean(0) if how == "mean" else embeddings[i][(a + b - 1) // 2]
            for i, a, b in keys
        ]
    )
    decode = _embedding_decoder(model).decode_embeddings
    texts: list[str] = []
    for s in range(0, len(vectors), batch):
        texts += decode(torch.from_numpy(vectors[s : s + batch]).float().to(model.device))
    return dict(zip(keys, texts, strict=True))


def _score(
    plan: Plan, texts: Mapping[tuple[int, int, int], str], refs: list[list[str]]
) -> dict[str, float]:
    """Every frame gets the text of its segment (decoded once, held over the segment); CIDEr
    and BLEU-4 of all frames against their reference captions."""
    frames = len(refs[0])
    hyps: list[str] = []
    for i, starts in enumerate(plan):
        for a, b in itertools.pairwise([*starts, frames]):
            hyps += [texts[i, a, b]] * (b - a)
    scores = caption_scores(hyps, [[r] for stream in refs for r in stream])
    return {"decodes": sum(len(starts) for starts in plan) / len(plan), **scores}


def ops_at(points: Sequence[dict[str, float]], target: float) -> float | None:
    """Decoding operations per stream at which a curve first reaches CIDEr `target`, linearly
    interpolated between the points around the crossing; None if it never does."""
    ordered = sorted(points, key=lambda p: p["decodes"])
    previous = None
    for p in ordered:
        if p["cider"] >= target - 1e-12:
            if previous is None or p["cider"] == previous["cider"]:
                return p["decodes"]
            t = (target - previous["cider"]) / (p["cider"] - previous["cider"])
            return previous["decodes"] + t * (p["decodes"] - previous["decodes"])
        previous = p
    return None


def boundary_f1(true_starts: Sequence[int], found: Sequence[int], tolerance: int = 1) -> float:
    """F1 of found segment boundaries against the true ones (within `tolerance` frames)."""
    truth, guess = list(true_starts[1:]), list(found[1:])
    if not truth and not guess:
        return 1.0
    hits = sum(any(abs(g - t) <= tolerance for t in truth) for g in guess)
    recalled = sum(any(abs(g - t) <= tolerance for g in guess) for t in truth)
    precision = hits / len(guess) if guess else 0.0
    recall = recalled / len(truth) if truth else 0.0
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def selective_decoding(
    model: VLModel, cfg: SelectiveConfig | None = None, encode: FrameEncoder | None = None
) -> dict[str, Any]:
    """The stream benchmark for a model with `predict_embedding` and `decode_embeddings`:
    the uniform and selective curves (CIDEr, BLEU-4 against decodes per stream), the CIDEr of
    decoding every frame and the decoding operations each curve needs to reach it."""
    cfg = cfg or SelectiveConfig()
    was_training = model.training
    model.eval()
    spec = cfg.spec
    streams = make_streams(cfg.streams, cfg.seed, model.x_encoder.image_size, spec)
    embeddings = [frame_embeddings(model, s.frames, encode) for s in streams]
    refs = [s.frame_captions() for s in streams]
    orders = [ward_merge_order(e) for e in embeddings]
    uniform_plans = {
        every: [uniform_starts(spec.frames, every)] * len(streams) for every in UNIFORM_EVERY
    }
    selective_plans = {k: [segment_starts(o, k) for o in orders] for k in SELECTIVE_SEGMENTS}
    oracle_plan = [s.starts for s in streams]
    plans = [*uniform_plans.values(), *selective_plans.values(), oracle_plan]
    texts = _decode_segments(
        model,
        embeddings,
        [seg for plan in plans for seg in _segments(plan, spec.frames)],
        cfg.representation,
    )
    uniform = [
        {"every": every, **_score(plan, texts, refs)} for every, plan in uniform_plans.items()
    ]
    selective = [
        {
            "segments": k,
            "boundaryF1": float(
                np.mean([boundary_f1(s.starts, st) for s, st in zip(streams, plan, strict=True)])
            ),
            **_score(plan, texts, refs),
        }
        for k, plan in selective_plans.items()
    ]
    oracle = _score(oracle_plan, texts, refs)
    # Chance: every true segment captioned with another segment's caption.
    rng = np.random.default_rng([cfg.seed, 1])
    pool = [c for s in streams for c in s.captions]
    shuffled = {
        (i, a, b): pool[int(rng.integers(len(pool)))]
        for i, a, b in _segments(oracle_plan, spec.frames)
    }
    chance = _score(oracle_plan, shuffled, refs)

    every_frame = next(p for p in uniform if p["every"] == 1)
    target = every_frame["cider"]
    uniform_ops = ops_at(uniform, target)
    selective_ops = ops_at(selective, target)
    model.train(was_training)
    return {
        "spec": asdict(spec),
        "streams": cfg.streams,
        "seed": cfg.seed,
        "representation": cfg.representation,
        "framesPerStream": spec.frames,
        "trueSegmentsPerStream": float(np.mean([len(s.starts) for s in streams])),
        "uniform": uniform,
        "selective": selective,
        "oracle": oracle,
        "everyFrameCider": target,
        # CIDEr of other segments' captions: a decoder at or below it decodes nothing useful,
        # and then no ratio of decoding operations means anything.
        "chanceCider": chance["cider"],
        "uniformOpsAtEveryFrameCider": uniform_ops,
        "selectiveOpsAtEveryFrameCider": selective_ops,
        # Decoding every frame against selective decoding, at the CIDEr of decoding every frame.
        "ratioVsEveryFrame": _ratio(spec.frames, selective_ops),
        # The uniform curve against the selective one, both at that CIDEr.
        "ratioAtEqualCider": _ratio(uniform_ops, selective_ops),
        "example": {
            "trueStarts": streams[0].starts,
            "foundStarts": segment_starts(orders[0], len(streams[0].starts)),
            "captions": streams[0].captions,
            "frames": _thumbnails(streams[0].frames),
        },
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _thumbnails(frames: np.ndarray, size: int = 32) -> list[list[list[int]]]:
    """Small grey thumbnails (uint8 lists) of a stream's frames, for the report's strip."""
    grey = ((frames.mean(1) + 1) * 127.5).clip(0, 255).astype(np.uint8)
    return [np.asarray(Image.fromarray(g).resize((size, size))).tolist() for g in grey]


def curve_lines(result: dict[str, Any]) -> list[str]:
    """The benchmark as plain lines for a terminal: both curves, then the ratios."""
    lines = [
        f"selective decoding: {result['streams']} streams × {result['framesPerStream']} frames, "
        f"{result['trueSegmentsPerStream']:.1f} true segments per stream, "
        f"decoding the segment {result['representation']}",
        f"{'curve':<10} {'setting':>14} {'decodes/stream':>15} {'CIDEr':>7} {'BLEU-4':>7} {'boundary F1':>12}",
    ]
    for p in result["uniform"]:
        lines.append(
            f"{'uniform':<10} {'every ' + str(p['every']):>14} {p['decodes']:>15.2f} {p['cider']:>7.3f} {p['bleu4']:>7.3f}"
        )
    for p in result["selective"]:
        lines.append(
            f"{'selective':<10} {str(p['segments']) + ' segments':>14} {p['decodes']:>15.2f} "
            f"{p['cider']:>7.3f} {p['bleu4']:>7.3f} {p['boundaryF1']:>12.2f}"
        )
    o = result["oracle"]
    lines.append(
        f"{'oracle':<10} {'true segments':>14} {o['decodes']:>15.2f} {o['cider']:>7.3f} {o['bleu4']:>7.3f}"
    )

    def fmt(v: float | None, suffix: str = "") -> str:
        return (
            "not reached"
            if v is None or (isinstance(v, float) and math.isnan(v))
            else f"{v:.2f}{suffix}"
        )

    lines += [
        f"CIDEr of decoding every frame: {result['everyFrameCider']:.3f} "
        f"(chance, other segments' captions: {result['chanceCider']:.3f})",
        f"decodes per stream to reach it: uniform {fmt(result['uniformOpsAtEveryFrameCider'])}, "
        f"selective {fmt(result['selectiveOpsAtEveryFrameCider'])}",
        f"ratio of decoding operations at equal CIDEr (uniform curve / selective): {fmt(result['ratioAtEqualCider'], '×')}",
        f"ratio against decoding every frame: {fmt(result['ratioVsEveryFrame'], '×')}",
    ]
    return lines
