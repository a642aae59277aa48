"""Selective decoding (VL-JEPA paper, section on it): over a stream of frames, embed every
frame, cut the stream into segments by temporally constrained Ward clustering and decode text
once per segment; compared, as CIDEr against decoding operations, with decoding at fixed rates
and with the same clustering of the X-encoder's raw features.

The stream benchmark has a fixed definition (`StreamSpec`): 64-frame streams whose segment
lengths are drawn uniformly from [4, 16] frames, each segment one image of the model's own
dataset's test split (fashion-grid grids, emoji, a manifest's test images) with its captions.
Every frame of a segment is the image shifted by a few pixels with Gaussian noise on top;
neighbouring segments meet in a linear cross-fade of 3 frames centred on their boundary; once
per stream the picture pauses: 4 identical frames.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vlarena.data.errors import DataError
from vlarena.data.manifest import Dataset
from vlarena.errors import UserInputError
from vlarena.evaluation.metrics import caption_scores
from vlarena.models.base import VLModel

REPRESENTATIONS = ("mean", "midpoint")
# Decoding rates of the uniform baseline (one decode every `r` frames) and segment counts of
# the segmentation curves; both end at one decode per frame.
UNIFORM_EVERY = (64, 32, 16, 8, 6, 4, 3, 2, 1)
SELECTIVE_SEGMENTS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32, 48, 64)
# The uniform rates (1/2 to 1/16) whose CIDEr the headline ratio is taken at.
HEADLINE_EVERY = (2, 4, 8, 16)
PAPER_RATIO = 2.85  # the paper's fewer decoding operations at equal CIDEr


class TooFewStreamImages(DataError):
    """A test split without the 2 captioned images a stream needs (a questions-only manifest)."""


@dataclass(frozen=True)
class StreamSpec:
    """The fixed stream definition; change it only on purpose (results stop being comparable)."""

    frames: int = 64
    min_segment: int = 4
    max_segment: int = 16
    fade: int = 3  # frames of the linear cross-fade centred on each boundary
    pause: int = 4  # identical frames, once per stream
    max_shift: int = 4  # pixels at the encoder's input size, in x and y independently
    noise: float = 0.05  # std of Gaussian noise on pixels in [-1, 1]


@dataclass
class Stream:
    """One stream: frames (F, 3, S, S) in [-1, 1], where its segments start (a boundary is the
    middle frame of its cross-fade), each segment's reference captions."""

    frames: np.ndarray
    starts: list[int]
    captions: list[tuple[str, ...]]

    def frame_captions(self) -> list[tuple[str, ...]]:
        """The reference captions of every frame."""
        return [self.captions[i] for i in segment_ids(self.starts, len(self.frames))]


def segment_ids(starts: Sequence[int], frames: int) -> np.ndarray:
    """The segment index of every frame, given where segments start (the first at 0)."""
    ids = np.zeros(frames, dtype=np.int64)
    for start in starts[1:]:
        ids[start:] += 1
    return ids


def _layout(rng: np.random.Generator, spec: StreamSpec) -> tuple[list[int], list[range]]:
    """Segment starts, and each segment's frames outside the cross-fades.

    The last segment is cut at the stream's end; a layout that would leave it shorter than
    `min_segment`, or leave no segment room for the pause, is drawn again, so every segment
    keeps its length in [min_segment, max_segment] and every stream has its pause.
    """
    half = spec.fade // 2
    while True:
        starts, total = [], 0
        while total < spec.frames:
            starts.append(total)
            total += int(rng.integers(spec.min_segment, spec.max_segment + 1))
        if spec.frames - starts[-1] < spec.min_segment:
            continue
        ends = [*starts[1:], spec.frames]
        runs = [
            range(a + (spec.fade - half if i else 0), b - (half if b < spec.frames else 0))
            for i, (a, b) in enumerate(zip(starts, ends, strict=True))
        ]
        if any(len(r) >= spec.pause for r in runs):
            return starts, runs


def _jittered(image: np.ndarray, rng: np.random.Generator, spec: StreamSpec) -> np.ndarray:
    """The image shifted by up to `max_shift` pixels (edges repeated) with Gaussian noise."""
    m, size = spec.max_shift, image.shape[-1]
    dy, dx = (int(v) for v in rng.integers(-m, m + 1, 2))
    padded = np.pad(image, ((0, 0), (m, m), (m, m)), mode="edge")
    moved = padded[:, m - dy : m - dy + size, m - dx : m - dx + size]
    noise = rng.normal(0.0, spec.noise, image.shape).astype(np.float32)
    return np.clip(moved + noise, -1.0, 1.0)


def make_streams(
    test: Dataset, count: int, seed: int, image_size: int, spec: StreamSpec | None = None
) -> list[Stream]:
    """`count` streams of `test`'s captioned images, the same for the same arguments."""
    spec = spec or StreamSpec()
    records = [r for r in test.records if r.captions]
    if len(records) < 2:
        raise TooFewStreamImages(
            f"{test.manifest_path}: selective decoding needs at least 2 captioned test images, "
            f"the test split has {len(records)}"
        )
    half = spec.fade // 2
    streams = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        starts, runs = _layout(rng, spec)
        picks = [int(rng.integers(len(records)))]
        for _ in starts[1:]:  # neighbouring segments never show the same image
            picks.append((picks[-1] + 1 + int(rng.integers(len(records) - 1))) % len(records))
        shown = [records[p] for p in picks]
        images = replace(test, records=shown).load_images(image_size)
        frames = np.empty((spec.frames, 3, image_size, image_size), dtype=np.float32)
        for image, run in zip(images, runs, strict=True):
            for f in run:
                frames[f] = _jittered(image, rng, spec)
        room = [r for r in runs if len(r) >= spec.pause]
        run = room[int(rng.integers(len(room)))]
        first = run.start + int(rng.integers(len(run) - spec.pause + 1))
        frames[first + 1 : first + spec.pause] = frames[first]
        # Cross-fades read the finished frames on either side, the pause included.
        for start in starts[1:]:
            before, after = start - half - 1, start - half + spec.fade
            for j in range(spec.fade):
                w = np.float32((j + 1) / (spec.fade + 1))
                frames[before + 1 + j] = (1 - w) * frames[before] + w * frames[after]
        streams.append(Stream(frames, starts, [r.captions for r in shown]))
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
    # Smoke tests size it down (`report_config`); the page says when a ratio is within noise.
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
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of (F, 3, S, S): the unit-norm predicted embedding (F, D), and the X-encoder's
    visual tokens mean-pooled (F, C), what the raw-feature baseline segments. A frozen
    X-encoder's visual tokens come from `encode` (the caller's feature path, so frames are
    encoded as the training features were); a trainable one reads the pixels."""
    if model.x_encoder.frozen and encode is None:
        raise ValueError("a frozen X-encoder needs `encode` to turn frames into visual tokens")
    predict = _embedding_decoder(model).predict_embedding
    embeddings, features = [], []
    for s in range(0, len(frames), batch):
        chunk = frames[s : s + batch]
        visual = torch.from_numpy(encode(chunk) if encode is not None else chunk)
        visual = visual.to(model.device).float()
        tokens = visual if model.x_encoder.frozen else model.x_encoder(visual)  # (B, T, C)
        embeddings.append(F.normalize(predict(visual), dim=-1).cpu())
        features.append(tokens.mean(1).cpu())
    return torch.cat(embeddings).numpy(), torch.cat(features).double().numpy()


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
    plan: Plan,
    texts: Mapping[tuple[int, int, int], str],
    refs: Sequence[Sequence[tuple[str, ...]]],
) -> dict[str, float]:
    """Every frame gets the text of its segment (decoded once, held over the segment); CIDEr
    and BLEU-4 of all frames against their reference captions."""
    frames = len(refs[0])
    hyps: list[str] = []
    for i, starts in enumerate(plan):
        for a, b in itertools.pairwise([*starts, frames]):
            hyps += [texts[i, a, b]] * (b - a)
    scores = caption_scores(hyps, [list(r) for stream in refs for r in stream])
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


def ratios_at_uniform_rates(
    uniform: Sequence[Mapping[str, float]], curve: Sequence[dict[str, float]]
) -> dict[str, Any]:
    """At each uniform rate of `HEADLINE_EVERY`: the CIDEr uniform decoding reaches there, the
    decodes `curve` needs to reach it (interpolated) and uniform decodes ÷ those; `ratio` is
    the geometric mean of the per-rate ratios, None unless the curve reaches every rate."""
    rates = []
    for every in HEADLINE_EVERY:
        point = next(p for p in uniform if p["every"] == every)
        decodes = ops_at(curve, point["cider"])
        rates.append(
            {
                "every": every,
                "cider": point["cider"],
                "uniformDecodes": point["decodes"],
                "decodes": decodes,
                "ratio": _ratio(point["decodes"], decodes),
            }
        )
    reached = [r["ratio"] for r in rates if r["ratio"] is not None]
    geometric = (
        math.exp(float(np.mean([math.log(r) for r in reached])))
        if len(reached) == len(rates)
        else None
    )
    return {"ratio": geometric, "rates": rates}


def beats(ratio: float | None, baseline: float | None) -> bool | None:
    """Whether a curve's headline ratio beats a baseline's. A curve without one never reached
    some uniform rate's CIDEr, however many segments it decoded: it is below any curve that
    reached them all. None when neither reached them all."""
    if ratio is None and baseline is None:
        return None
    if ratio is None or baseline is None:
        return ratio is not None
    return ratio > baseline


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
    model: VLModel,
    test: Dataset,
    cfg: SelectiveConfig | None = None,
    encode: FrameEncoder | None = None,
) -> dict[str, Any]:
    """The stream benchmark, on streams of `test` (the test split of the model's dataset), for
    a model with `predict_embedding` and `decode_embeddings`: CIDEr and BLEU-4 against decodes
    per stream for uniform decoding, selective decoding and the same clustering of raw
    X-encoder features; the headline ratios at the CIDEr of uniform rates 1/2 to 1/16, and the
    decodes each curve needs to reach the CIDEr of decoding every frame."""
    _embedding_decoder(model)  # a family without embeddings to decode fails before any work
    cfg = cfg or SelectiveConfig()
    was_training = model.training
    model.eval()
    spec = cfg.spec
    streams = make_streams(test, cfg.streams, cfg.seed, model.x_encoder.image_size, spec)
    embedded = [frame_embeddings(model, s.frames, encode) for s in streams]
    embeddings = [e for e, _ in embedded]
    refs = [s.frame_captions() for s in streams]
    orders = {
        "selective": [ward_merge_order(e) for e in embeddings],
        "rawFeature": [ward_merge_order(f) for _, f in embedded],
    }
    uniform_plans = {
        every: [uniform_starts(spec.frames, every)] * len(streams) for every in UNIFORM_EVERY
    }
    segmented_plans = {
        curve: {k: [segment_starts(o, k) for o in order] for k in SELECTIVE_SEGMENTS}
        for curve, order in orders.items()
    }
    oracle_plan = [s.starts for s in streams]
    plans = [
        *uniform_plans.values(),
        *(plan for by_k in segmented_plans.values() for plan in by_k.values()),
        oracle_plan,
    ]
    # Every curve decodes a segment from the predicted embeddings the same way; the raw
    # features only choose where its segments lie.
    texts = _decode_segments(
        model,
        embeddings,
        [seg for plan in plans for seg in _segments(plan, spec.frames)],
        cfg.representation,
    )
    uniform = [
        {"every": every, **_score(plan, texts, refs)} for every, plan in uniform_plans.items()
    ]
    segmented = {
        curve: [
            {
                "segments": k,
                "boundaryF1": float(
                    np.mean(
                        [boundary_f1(s.starts, st) for s, st in zip(streams, plan, strict=True)]
                    )
                ),
                **_score(plan, texts, refs),
            }
            for k, plan in by_k.items()
        ]
        for curve, by_k in segmented_plans.items()
    }
    oracle = _score(oracle_plan, texts, refs)
    # Chance: every true segment captioned with another segment's caption.
    rng = np.random.default_rng([cfg.seed, 1])
    pool = [c[0] for s in streams for c in s.captions]
    shuffled = {
        (i, a, b): pool[int(rng.integers(len(pool)))]
        for i, a, b in _segments(oracle_plan, spec.frames)
    }
    chance = _score(oracle_plan, shuffled, refs)

    every_frame = next(p for p in uniform if p["every"] == 1)
    target = every_frame["cider"]
    uniform_ops = ops_at(uniform, target)
    selective_ops = ops_at(segmented["selective"], target)
    # Uniform decodes ÷ decodes at equal CIDEr, geometric mean over uniform rates 1/2 to 1/16:
    # selective decoding, and the raw-feature segmentation it has to beat.
    headline: dict[str, Any] = {
        "paper": PAPER_RATIO,
        **{curve: ratios_at_uniform_rates(uniform, points) for curve, points in segmented.items()},
    }
    headline["selectiveBeatsRawFeature"] = beats(
        headline["selective"]["ratio"], headline["rawFeature"]["ratio"]
    )
    model.train(was_training)
    return {
        "spec": asdict(spec),
        "dataset": test.info.name,
        "streams": cfg.streams,
        "seed": cfg.seed,
        "representation": cfg.representation,
        "framesPerStream": spec.frames,
        "trueSegmentsPerStream": float(np.mean([len(s.starts) for s in streams])),
        "uniform": uniform,
        "selective": segmented["selective"],
        "rawFeature": segmented["rawFeature"],
        "oracle": oracle,
        "headline": headline,
        "everyFrameCider": target,
        # CIDEr of other segments' captions: a decoder at or below it decodes nothing useful,
        # and then no ratio of decoding operations means anything.
        "chanceCider": chance["cider"],
        "uniformOpsAtEveryFrameCider": uniform_ops,
        "selectiveOpsAtEveryFrameCider": selective_ops,
        # Decoding every frame against selective decoding, at the CIDEr of decoding every frame.
        "ratioVsEveryFrame": _ratio(spec.frames, selective_ops),
        "example": {
            "trueStarts": streams[0].starts,
            "foundStarts": segment_starts(orders["selective"][0], len(streams[0].starts)),
            "rawFeatureStarts": segment_starts(orders["rawFeature"][0], len(streams[0].starts)),
            "captions": [c[0] for c in streams[0].captions],
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
    """The benchmark as plain lines for a terminal: the curves, then the ratios."""
    lines = [
        f"selective decoding: {result['streams']} streams × {result['framesPerStream']} frames "
        f"of {result['dataset']} test images, "
        f"{result['trueSegmentsPerStream']:.1f} true segments per stream, "
        f"decoding the segment {result['representation']}",
        f"{'curve':<12} {'setting':>14} {'decodes/stream':>15} {'CIDEr':>7} {'BLEU-4':>7} {'boundary F1':>12}",
    ]
    for p in result["uniform"]:
        lines.append(
            f"{'uniform':<12} {'every ' + str(p['every']):>14} {p['decodes']:>15.2f} {p['cider']:>7.3f} {p['bleu4']:>7.3f}"
        )
    for curve, name in (("selective", "selective"), ("rawFeature", "raw feature")):
        for p in result[curve]:
            lines.append(
                f"{name:<12} {str(p['segments']) + ' segments':>14} {p['decodes']:>15.2f} "
                f"{p['cider']:>7.3f} {p['bleu4']:>7.3f} {p['boundaryF1']:>12.2f}"
            )
    o = result["oracle"]
    lines.append(
        f"{'oracle':<12} {'true segments':>14} {o['decodes']:>15.2f} {o['cider']:>7.3f} {o['bleu4']:>7.3f}"
    )

    def fmt(v: float | None, suffix: str = "") -> str:
        return (
            "not reached"
            if v is None or (isinstance(v, float) and math.isnan(v))
            else f"{v:.2f}{suffix}"
        )

    head = result["headline"]
    lines.append(
        "fewer decodes than uniform at equal CIDEr, per uniform rate (selective | raw feature):"
    )
    for sel, raw in zip(head["selective"]["rates"], head["rawFeature"]["rates"], strict=True):
        lines.append(
            f"  1/{sel['every']:<3} CIDEr {sel['cider']:.3f}: {sel['uniformDecodes']:.0f} uniform "
            f"decodes, {fmt(sel['decodes'])} selective ({fmt(sel['ratio'], '×')}), "
            f"{fmt(raw['decodes'])} raw feature ({fmt(raw['ratio'], '×')})"
        )
    lines += [
        f"headline, geometric mean over 1/2 to 1/16: selective {fmt(head['selective']['ratio'], '×')} "
        f"(paper: {head['paper']:.2f}×), raw-feature segmentation {fmt(head['rawFeature']['ratio'], '×')}: "
        + {
            True: "selective decoding beats raw-feature segmentation",
            False: "selective decoding does not beat raw-feature segmentation",
            None: "no comparison (neither curve reaches every uniform rate's CIDEr)",
        }[head["selectiveBeatsRawFeature"]],
        f"CIDEr of decoding every frame: {result['everyFrameCider']:.3f} "
        f"(chance, other segments' captions: {result['chanceCider']:.3f})",
        f"decodes per stream to reach it: uniform {fmt(result['uniformOpsAtEveryFrameCider'])}, "
        f"selective {fmt(result['selectiveOpsAtEveryFrameCider'])}",
        f"ratio against decoding every frame: {fmt(result['ratioVsEveryFrame'], '×')}",
    ]
    return lines
