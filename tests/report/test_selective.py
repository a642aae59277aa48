"""Selective decoding: the fixed stream definition, Ward segmentation, and the benchmark."""

from __future__ import annotations

import numpy as np
import pytest

from vlarena.errors import UserInputError
from vlarena.evaluation.report.selective import (
    SELECTIVE_SEGMENTS,
    UNIFORM_EVERY,
    SelectiveConfig,
    StreamSpec,
    boundary_f1,
    curve_lines,
    make_streams,
    ops_at,
    segment_starts,
    selective_decoding,
    ward_merge_order,
)


def coarse(frame: np.ndarray, block: int = 32) -> np.ndarray:
    """Mean grey level of block × block tiles (at 128 px: one per visual token)."""
    grey = frame.mean(0)
    side = grey.shape[0] // block
    return grey.reshape(side, block, side, block).mean((1, 3))


def test_streams_follow_the_fixed_definition():
    spec = StreamSpec()
    streams = make_streams(2, seed=7, image_size=128)
    again = make_streams(2, seed=7, image_size=128)
    within, across = [], []
    for s, t in zip(streams, again, strict=True):
        assert s.frames.shape == (64, 3, 128, 128)
        assert s.frames.min() >= -1.0 and s.frames.max() <= 1.0
        lengths = np.diff([*s.starts, spec.frames])
        assert s.starts[0] == 0 and all(4 <= n <= 16 for n in lengths[:-1])
        assert 1 <= lengths[-1] <= 16  # the last segment is cut at the stream's end
        assert len(s.captions) == len(s.starts)
        assert s.frame_captions()[s.starts[1]] == s.captions[1]
        np.testing.assert_array_equal(s.frames, t.frames)  # seeded
        assert not np.array_equal(s.frames[0], s.frames[1])  # perturbed per frame
        for k, start in enumerate(s.starts[:-1]):
            a, b, c = (coarse(s.frames[i]) for i in (start, start + 1, s.starts[k + 1]))
            within.append(np.abs(a - b).mean())
            across.append(np.abs(a - c).mean())
    # frames of a segment are small perturbations of one grid: close at the scale of a token
    assert np.mean(within) < 0.5 * np.mean(across)
    assert make_streams(1, seed=8, image_size=128)[0].captions != streams[0].captions


def test_ward_clustering_recovers_segments_of_a_piecewise_constant_stream():
    rng = np.random.default_rng(0)
    starts = [0, 9, 21, 30, 45]
    centres = rng.normal(size=(len(starts), 16))
    ids = np.searchsorted(starts, np.arange(64), side="right") - 1
    emb = centres[ids] + rng.normal(scale=0.05, size=(64, 16))
    order = ward_merge_order(emb)
    assert sorted(order) == list(range(1, 64))  # every boundary is removed exactly once
    assert segment_starts(order, 5) == starts
    assert segment_starts(order, 1) == [0]
    assert segment_starts(order, 64) == list(range(64))
    assert boundary_f1(starts, segment_starts(order, 5)) == 1.0


def test_ops_at_interpolates_where_a_curve_first_reaches_the_target():
    curve = [
        {"decodes": 1, "cider": 1.0},
        {"decodes": 4, "cider": 2.0},
        {"decodes": 8, "cider": 3.0},
    ]
    assert ops_at(curve, 1.5) == pytest.approx(2.5)
    assert ops_at(curve, 0.5) == 1
    assert ops_at(curve, 3.0) == 8
    assert ops_at(curve, 3.5) is None


def test_boundary_f1_scores_missed_and_extra_boundaries():
    assert boundary_f1([0, 10, 20], [0, 10, 20]) == 1.0
    assert boundary_f1([0, 10, 20], [0, 11]) == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert boundary_f1([0, 10], [0]) == 0.0


def test_benchmark_scores_both_curves_on_a_trained_vl_jepa(tiny_models):
    from vlarena.experiments.features import frame_encoder

    model = tiny_models["vl-jepa"]
    encode = frame_encoder(model.x_encoder)
    result = selective_decoding(model, SelectiveConfig(streams=1, seed=3), encode)
    assert [p["every"] for p in result["uniform"]] == list(UNIFORM_EVERY)
    assert [p["decodes"] for p in result["uniform"]] == [float(-(-64 // e)) for e in UNIFORM_EVERY]
    assert [p["segments"] for p in result["selective"]] == list(SELECTIVE_SEGMENTS)
    every_frame = result["uniform"][-1]
    # 64 segments of one frame decode exactly what decoding every frame decodes
    assert result["selective"][-1]["cider"] == pytest.approx(every_frame["cider"])
    assert result["everyFrameCider"] == every_frame["cider"]
    assert result["selectiveOpsAtEveryFrameCider"] <= 64
    assert result["ratioVsEveryFrame"] == pytest.approx(
        64 / result["selectiveOpsAtEveryFrameCider"]
    )
    lines = "\n".join(curve_lines(result))
    assert "ratio of decoding operations at equal CIDEr" in lines and "oracle" in lines


def test_benchmark_needs_a_model_that_decodes_embeddings():
    with pytest.raises(UserInputError, match="representation"):
        SelectiveConfig(representation="last")


def test_a_frozen_encoder_needs_a_frame_encoder(tiny_models):
    with pytest.raises(ValueError, match="frozen X-encoder needs"):
        selective_decoding(tiny_models["vl-jepa"], SelectiveConfig(streams=1))
