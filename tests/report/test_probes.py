"""What the report measures on trained models: attention maps, embeddings, confusion, latency."""

from __future__ import annotations

import dataclasses

import numpy as np

from vlarena.evaluation.evaluate import EvalConfig, zeroshot, zeroshot_items
from vlarena.evaluation.report import probes


def test_slot_cells_map_grid_slots_onto_visual_tokens():
    cells = probes.slot_cells(["top_left", "top_right", "bottom_left", "bottom_right"], 16)
    assert cells == {
        "top_left": [0, 1, 4, 5],
        "top_right": [2, 3, 6, 7],
        "bottom_left": [8, 9, 12, 13],
        "bottom_right": [10, 11, 14, 15],
    }
    assert probes.slot_cells(["a", "b", "c", "d"], 9) is None  # 3×3 tokens do not split in 2×2


def test_zeroshot_confusion_agrees_with_the_evaluated_accuracy(
    tiny_models, tiny_splits, tiny_test_visual
):
    test = dataclasses.replace(tiny_splits.test, records=tiny_splits.test.records[:16])
    visual = tiny_test_visual[:16]
    rows, cands, targets = zeroshot_items(test)
    assert len(rows) == 4 * 16 and all(len(c) == 10 for c in cands)
    for model in tiny_models.values():
        confusion = probes.zeroshot_confusion(model, test, visual)
        evaluated = zeroshot(model, test, visual, EvalConfig())["zeroshot_top1"].value
        assert confusion["n"] == 64
        assert (
            np.array(confusion["counts"]).sum(1).tolist()
            == np.bincount(targets, minlength=10).tolist()
        )
        assert confusion["accuracy"] == evaluated


def test_predictor_attention_without_questions_covers_the_whole_input(
    tiny_models, tiny_splits, tiny_test_visual
):
    records = [dataclasses.replace(r, questions=()) for r in tiny_splits.test.records[:4]]
    test = dataclasses.replace(tiny_splits.test, records=records)
    data = probes.predictor_attention(tiny_models["vl-jepa"], test, tiny_test_visual[:4])
    layers = np.array(data["examples"][0]["queries"][0]["layers"])
    assert layers.shape[-1] == 16
    np.testing.assert_allclose(layers.sum(-1), 1, atol=1e-4)
    assert probes.predictor_attention(tiny_models["token-vlm"], test, tiny_test_visual[:4]) is None
    assert probes.cross_attention(tiny_models["vl-jepa"], test, tiny_test_visual[:4]) is None


def test_latency_is_measured_for_every_family_and_request(
    tiny_models, tiny_splits, tiny_test_visual
):
    test = dataclasses.replace(tiny_splits.test, records=tiny_splits.test.records[:4])
    loaded = {f: (m, tiny_test_visual[:4]) for f, m in tiny_models.items()}
    latency = probes.request_latency(loaded, test, repeats=1)
    assert set(latency["vl-jepa"]) == {"caption", "classify", "embed", "classifyCandidates"}
    assert set(latency["token-vlm"]) == {"caption", "classify", "classifyCandidates"}
    assert all(v > 0 for fam in latency.values() for v in fam.values())
