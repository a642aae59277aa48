"""Selective decoding: the fixed stream definition, Ward segmentation, the headline ratio and
the benchmark with its raw-feature baseline."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlarena.data import load_dataset
from vlarena.data.manifest import Dataset, load_manifest, write_manifest
from vlarena.errors import UserInputError
from vlarena.evaluation.report.selective import (
    HEADLINE_EVERY,
    SELECTIVE_SEGMENTS,
    UNIFORM_EVERY,
    SelectiveConfig,
    StreamSpec,
    TooFewStreamImages,
    beats,
    boundary_f1,
    curve_lines,
    frame_embeddings,
    make_streams,
    ops_at,
    ratios_at_uniform_rates,
    segment_starts,
    selective_decoding,
    ward_merge_order,
)

STILL = StreamSpec(max_shift=0, noise=0.0)  # content frames are the test images themselves


def identical_runs(frames: np.ndarray) -> list[tuple[int, int]]:
    """(first frame, length) of every run of at least two identical consecutive frames."""
    runs, start = [], 0
    for i in range(1, len(frames) + 1):
        if i == len(frames) or not np.array_equal(frames[i], frames[i - 1]):
            if i - start > 1:
                runs.append((start, i - start))
            start = i
    return runs


def test_streams_follow_the_fixed_definition(tiny_splits):
    test = tiny_splits.test
    streams = make_streams(test, 8, seed=7, image_size=64)
    again = make_streams(test, 8, seed=7, image_size=64)
    captions = {r.captions for r in test.records}
    for s, t in zip(streams, again, strict=True):
        assert s.frames.shape == (64, 3, 64, 64)
        assert s.frames.min() >= -1.0 and s.frames.max() <= 1.0
        np.testing.assert_array_equal(s.frames, t.frames)  # seeded
        lengths = np.diff([*s.starts, 64])
        assert s.starts[0] == 0 and all(4 <= n <= 16 for n in lengths)
        assert len(s.captions) == len(s.starts) and set(s.captions) <= captions
        assert all(a != b for a, b in itertools.pairwise(s.captions))
        assert s.frame_captions()[s.starts[1]] == s.captions[1]
        for b in s.starts[1:]:  # a 3-frame cross-fade centred on each boundary
            before, after = s.frames[b - 2], s.frames[b + 2]
            for j, w in enumerate((0.25, 0.5, 0.75)):
                np.testing.assert_allclose(
                    s.frames[b - 1 + j], (1 - w) * before + w * after, atol=1e-6
                )
            assert not np.allclose(before, after, atol=0.05)
        # one pause of exactly 4 identical frames; every other frame is jittered apart
        assert [n for _, n in identical_runs(s.frames)] == [4]
        (pause, _), *_ = identical_runs(s.frames)
        fades = {b + d for b in s.starts[1:] for d in (-1, 0, 1)}
        assert not fades & set(range(pause, pause + 4))
    assert make_streams(test, 1, seed=8, image_size=64)[0].captions != streams[0].captions


def manifest_dataset(root: Path) -> Dataset:
    """Six flat-colour images with their own captions, three of them in the test split."""
    records = []
    for i in range(6):
        colour = (40 * i, 255 - 40 * i, 120)
        Image.new("RGB", (16, 16), colour).save(root / f"{i}.png")
        split = "test" if i % 2 else "train"
        records.append({"image": f"{i}.png", "caption": f"colour {i}", "split": split})
    return load_manifest(write_manifest(records, root))


@pytest.mark.parametrize("source", ["emoji", "manifest"])
def test_streams_show_the_datasets_own_test_images(source, tmp_path):
    full = load_dataset("emoji") if source == "emoji" else manifest_dataset(tmp_path)
    test = full.split("test")
    images = test.load_images(32)
    for s in make_streams(test, 3, seed=1, image_size=32, spec=STILL):
        for k, start in enumerate(s.starts):
            first = start + 2 if k else 0  # the segment's first frame outside a cross-fade
            match = [i for i, image in enumerate(images) if np.array_equal(image, s.frames[first])]
            assert match, "a frame that is no test image"
            assert s.captions[k] in {test.records[i].captions for i in match}


def test_streams_need_two_captioned_test_images(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    one = load_manifest(write_manifest([{"image": "a.png", "caption": "a"}], tmp_path))
    with pytest.raises(TooFewStreamImages, match="at least 2 captioned test images"):
        make_streams(one, 1, seed=0, image_size=32)


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


def test_headline_is_the_geometric_mean_of_the_ratios_at_each_uniform_rate():
    uniform = [
        {"every": e, "decodes": 64 / e, "cider": c}
        for e, c in ((16, 0.4), (8, 0.6), (4, 0.8), (2, 0.9), (1, 0.95))
    ]
    curve = [
        {"decodes": d, "cider": c} for d, c in ((2, 0.2), (4, 0.5), (6, 0.7), (8, 0.85), (16, 0.95))
    ]
    head = ratios_at_uniform_rates(uniform, curve)
    assert [r["every"] for r in head["rates"]] == list(HEADLINE_EVERY) == [2, 4, 8, 16]
    # selective decodes interpolated at each rate's CIDEr: 0.9 halfway from 8 to 16, ...
    selective = {2: 12.0, 4: 22 / 3, 8: 5.0, 16: 10 / 3}
    for r in head["rates"]:
        assert r["decodes"] == pytest.approx(selective[r["every"]])
        assert r["ratio"] == pytest.approx(64 / r["every"] / selective[r["every"]])
    ratios = [64 / e / d for e, d in selective.items()]
    assert head["ratio"] == pytest.approx(math.prod(ratios) ** 0.25)
    assert head["ratio"] != pytest.approx(np.mean(ratios))
    short = ratios_at_uniform_rates(uniform, curve[:3])  # never reaches 0.8 or 0.9
    assert short["ratio"] is None
    assert [r["ratio"] is None for r in short["rates"]] == [True, True, False, False]


def test_boundary_f1_scores_missed_and_extra_boundaries():
    assert boundary_f1([0, 10, 20], [0, 10, 20]) == 1.0
    assert boundary_f1([0, 10, 20], [0, 11]) == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert boundary_f1([0, 10], [0]) == 0.0


def test_benchmark_scores_uniform_selective_and_raw_feature_curves(tiny_models, tiny_splits):
    from vlarena.experiments.features import frame_encoder

    model = tiny_models["vl-jepa"]
    encode = frame_encoder(model.x_encoder)
    stream = make_streams(tiny_splits.test, 1, seed=3, image_size=model.x_encoder.image_size)[0]
    embeddings, features = frame_embeddings(model, stream.frames, encode)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), np.ones(64), rtol=1e-5)
    np.testing.assert_allclose(features, encode(stream.frames).mean(1), rtol=1e-4, atol=1e-5)

    result = selective_decoding(model, tiny_splits.test, SelectiveConfig(streams=1, seed=3), encode)
    assert result["dataset"] == "fashion-grid"
    assert [p["every"] for p in result["uniform"]] == list(UNIFORM_EVERY)
    assert [p["decodes"] for p in result["uniform"]] == [float(-(-64 // e)) for e in UNIFORM_EVERY]
    every_frame = result["uniform"][-1]
    for curve in ("selective", "rawFeature"):
        points = result[curve]
        assert [p["segments"] for p in points] == list(SELECTIVE_SEGMENTS)
        assert all(0.0 <= p["boundaryF1"] <= 1.0 for p in points)
        # 64 segments of one frame decode exactly what decoding every frame decodes
        assert points[-1]["cider"] == pytest.approx(every_frame["cider"])
    assert result["everyFrameCider"] == every_frame["cider"]
    assert result["selectiveOpsAtEveryFrameCider"] <= 64
    assert result["ratioVsEveryFrame"] == pytest.approx(
        64 / result["selectiveOpsAtEveryFrameCider"]
    )
    head = result["headline"]
    assert head["paper"] == 2.85
    for curve in ("selective", "rawFeature"):
        rates = head[curve]["rates"]
        assert [(r["every"], r["uniformDecodes"]) for r in rates] == [
            (2, 32),
            (4, 16),
            (8, 8),
            (16, 4),
        ]
        if head[curve]["ratio"] is not None:
            logs = [math.log(r["ratio"]) for r in rates]
            assert head[curve]["ratio"] == pytest.approx(math.exp(np.mean(logs)))
    assert head["selectiveBeatsRawFeature"] == beats(
        head["selective"]["ratio"], head["rawFeature"]["ratio"]
    )
    assert len(result["example"]["rawFeatureStarts"]) == len(result["example"]["trueStarts"])
    lines = "\n".join(curve_lines(result))
    assert "headline, geometric mean over 1/2 to 1/16" in lines and "(paper: 2.85×)" in lines
    assert "raw feature" in lines and "oracle" in lines


def test_a_curve_that_never_reaches_a_rate_is_beaten_by_one_that_reaches_them_all():
    assert beats(2.4, 1.9) is True and beats(1.9, 2.4) is False and beats(2.0, 2.0) is False
    assert beats(2.4, None) is True  # the baseline never reached some rate's CIDEr
    assert beats(None, 1.2) is False
    assert beats(None, None) is None


def test_a_token_model_has_no_selective_decoding(tiny_models, tiny_splits):
    with pytest.raises(TypeError, match="predicts and decodes embeddings"):
        selective_decoding(tiny_models["token-vlm"], tiny_splits.test, SelectiveConfig(streams=1))


def test_benchmark_config_is_checked():
    with pytest.raises(UserInputError, match="representation"):
        SelectiveConfig(representation="last")
    with pytest.raises(UserInputError, match="at least one stream"):
        SelectiveConfig(streams=0)


def test_a_frozen_encoder_needs_a_frame_encoder(tiny_models, tiny_splits):
    with pytest.raises(ValueError, match="frozen X-encoder needs"):
        selective_decoding(tiny_models["vl-jepa"], tiny_splits.test, SelectiveConfig(streams=1))
