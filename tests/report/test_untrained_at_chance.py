"""An untrained model is at chance: each metric's interval holds its chance level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlarena.evaluation.evaluate import EvalConfig, evaluate_model
from vlarena.evaluation.statistics import mean_interval
from vlarena.models.registry import build_model, make_config


@pytest.mark.parametrize("family", ["token-vlm", "vl-jepa"])
def test_an_untrained_models_intervals_hold_their_chance_levels(
    family, tiny_splits, tiny_test_visual
):
    texts = tiny_splits.train.captions()
    scored = {}
    for seed in range(3):  # three untrained models: the seeds of the interval
        torch.manual_seed(seed)
        model = build_model(family, make_config(family, {"preset": "tiny"}), texts)
        result = evaluate_model(
            model,
            tiny_splits.test,
            tiny_test_visual,
            # Retrieval is left out: the tiny test split makes pools of 32 queries, too few for
            # an interval at chance (1/32) to mean much.
            EvalConfig(
                metrics=("caption_choice", "zeroshot", "vqa"),
                latency_repeats=0,
                seed=0,
            ),
        )
        for name, items in result["items"].items():
            scored.setdefault(name, {"chance": result["metrics"][name]["chance"], "seeds": []})
            scored[name]["seeds"].append(items)
    assert {"caption_of_10", "hard_caption_of_10", "zeroshot_top1", "vqa_accuracy"} <= set(scored)
    outside = {}
    for name, entry in scored.items():
        _, low, high = mean_interval(np.array(entry["seeds"]))
        if not low <= entry["chance"] <= high:
            outside[name] = (low, entry["chance"], high)
    assert not outside, outside
