"""The numbers of the comparison report: curves over seeds, the table, the verdict, the cost."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlarena.errors import UserInputError
from vlarena.evaluation.report.comparison import build_report, learning_curves, metric_label
from vlarena.evaluation.report.cost import DEFAULT_NODES, NodeType, cost_section
from vlarena.evaluation.report.report import load_nodes
from vlarena.evaluation.report.verdict import compare_metric

from .synthetic import metrics_doc, swapped

# "a" is better at choosing among texts, "b" at writing captions; "a" trains faster.
SPLIT = {
    "a": {
        "caption_of_10": 0.90,
        "i2t_r1@100": 0.70,
        "zeroshot_top1": 0.60,
        "vqa_accuracy": 0.5,
        "cider": 2.0,
        "bleu4": 0.35,
    },
    "b": {
        "caption_of_10": 0.60,
        "i2t_r1@100": 0.30,
        "zeroshot_top1": 0.40,
        "vqa_accuracy": 0.5,
        "cider": 4.0,
        "bleu4": 0.55,
    },
}
SPEED = {"a": 600.0, "b": 150.0}


def winners(report: dict) -> dict[str, str | None]:
    v = report["verdict"]
    return {u["key"]: u["winner"] for u in v["useCases"]} | {
        e["aspect"]: e["winner"] for e in v["efficiency"]
    }


def test_learning_curves_average_three_seeds_and_keep_their_spread():
    doc = metrics_doc(SPLIT, seeds=3, jitter=0.02)
    curves = learning_curves(doc)
    entry = curves["caption_of_10"]["families"]["a"]
    per_seed = np.array(
        [[p["caption_of_10"] for p in s["curve"]] for s in doc["families"]["a"]["seeds"]]
    )
    assert len(entry["seeds"]) == 3
    assert entry["samplesSeen"] == [5000, 10000, 15000, 20000]
    np.testing.assert_allclose(entry["mean"], per_seed.mean(0))
    np.testing.assert_allclose(entry["std"], per_seed.std(0, ddof=1))
    assert max(entry["std"]) > 0
    assert curves["caption_of_10"]["chance"] == 0.1
    assert curves["loss"]["chance"] is None


def test_table_puts_every_quality_metric_beside_its_chance_level():
    report = build_report(metrics_doc(SPLIT), measured={"device": "cpu", "threads": 2})
    quality = {r["key"]: r for r in report["table"] if r["group"] == "quality"}
    assert set(quality) == set(SPLIT["a"])
    assert quality["caption_of_10"]["chance"] == 0.1
    assert quality["caption_of_10"]["label"] == "true caption among 10"
    assert quality["caption_of_10"]["values"]["a"]["seeds"] == 3
    assert quality["caption_of_10"]["values"]["a"]["zMin"] > 2
    keys = [r["key"] for r in report["table"]]
    assert {"learnedParameters", "samplesPerSecond", "latencyMsPerImage"} <= set(keys)
    # matching, retrieval, classification, VQA, then caption scores
    assert (
        keys.index("caption_of_10")
        < keys.index("i2t_r1@100")
        < keys.index("vqa_accuracy")
        < keys.index("cider")
    )
    json.dumps(report)  # report.json must serialise


def test_verdict_follows_the_numbers_and_flips_when_the_families_swap_them():
    doc = metrics_doc(SPLIT, samples_per_second=SPEED, latency_ms={"a": 5.0, "b": 50.0})
    before = winners(build_report(doc))
    assert before == {
        "choose": "a",
        "answer": None,  # equal VQA: within error
        "describe": "b",
        "lowBudget": "a",
        "samplesPerSecond": "a",
        "captionMs": "a",
        "learnedParameters": None,
    }
    after = winners(build_report(swapped(doc, "a", "b")))
    flip = {"a": "b", "b": "a", None: None}
    assert after == {k: flip[v] for k, v in before.items()}
    sentences = build_report(doc)["verdict"]["summary"]
    assert any(s.startswith("For choosing among known texts") and "use a" in s for s in sentences)


def test_a_lead_within_the_seed_spread_is_no_win():
    stats = {
        "a": {"mean": 0.52, "std": 0.05, "seeds": 3, "chance": 0.1, "n": 1000},
        "b": {"mean": 0.50, "std": 0.05, "seeds": 3, "chance": 0.1, "n": 1000},
    }
    assert compare_metric("caption_of_10", stats)["winner"] is None
    stats["a"]["mean"] = 0.70
    assert compare_metric("caption_of_10", stats)["winner"] == "a"


def test_a_family_at_chance_wins_nothing():
    stats = {
        "a": {"mean": 0.105, "std": 0.0, "seeds": 1, "chance": 0.1, "n": 100},
        "b": {"mean": 0.02, "std": 0.0, "seeds": 1, "chance": 0.1, "n": 100},
    }
    result = compare_metric("caption_of_10", stats)
    assert result["winner"] is None and result["aboveChance"] == {"a": False, "b": False}


def test_cost_turns_measured_throughput_into_node_hours_and_money():
    measured = {"device": "cpu", "threads": 2}
    cpu = NodeType("cpu-8", "cpu", 0.40, vcpus=8, source="test price")
    gpu = NodeType("gpu", "cuda", 2.0, gpus=1, source="test price")
    cost = cost_section({"a": 100.0}, {"a": {"caption": 50.0}}, measured, [cpu, gpu])
    train = {r["node"]: r for r in cost["training"]}
    first = train["cpu-8"]["scales"][0]  # 1e6 samples at 100/s × (8 vCPUs / 2 threads)
    assert first["samples"] == 1e6
    assert first["nodeHours"] == pytest.approx(1e6 / 400 / 3600)
    assert first["usd"] == pytest.approx(first["nodeHours"] * 0.40)
    assert train["gpu"]["scales"][0]["usd"] is None  # measured on a CPU: not guessed
    serve = {r["node"]: r for r in cost["serving"]}["cpu-8"]
    assert serve["usdPerMillion"] == pytest.approx(1e6 * 0.050 / 3600 / 4 * 0.40)
    day = serve["scales"][-1]  # 1e8 requests a day
    assert day["nodes"] == int(np.ceil(1e8 * 0.050 / 3600 / 4 / 24))
    relative = NodeType("gpu", "cuda", 2.0, relative_throughput=10.0)
    priced = cost_section({"a": 100.0}, {}, measured, [relative])["training"][0]["scales"][0]
    assert priced["nodeHours"] == pytest.approx(1e6 / 1000 / 3600)


def test_default_node_prices_are_documented_and_can_be_replaced(tmp_path):
    assert all(n.source and n.usd_per_hour > 0 for n in DEFAULT_NODES)
    path = tmp_path / "nodes.json"
    path.write_text(
        json.dumps(
            [{"name": "big", "device": "cpu", "usdPerHour": 1.5, "vcpus": 32, "source": "quote"}]
        )
    )
    (node,) = load_nodes(path)
    assert node.usd_per_hour == 1.5 and node.capacity({"device": "cpu", "threads": 4}) == 8
    path.write_text(json.dumps([{"name": "x", "device": "tpu", "usdPerHour": 1}]))
    with pytest.raises(UserInputError, match="device"):
        load_nodes(path)


def test_metric_labels_read_as_english():
    assert metric_label("i2t_r1@1000") == "image→text R@1 among 1000"
    assert metric_label("caption_of_10") == "true caption among 10"
    assert metric_label("something_new") == "something_new"


def test_the_best_checkpoint_is_shown_beside_the_last_and_decides_nothing():
    from vlarena.evaluation.report.page import _checkpoints

    doc = metrics_doc(SPLIT, seeds=2)
    plain = build_report(doc, measured={"device": "cpu", "threads": 2})
    for i, seed in enumerate(doc["families"]["a"]["seeds"]):
        best = {k: dict(m, value=m["value"] + 0.05) for k, m in seed["metrics"].items()}
        seed["checkpoints"] = {
            "last": {
                "samples": 20000,
                "metric": "caption_of_10",
                "value": 0.8,
                "metrics": seed["metrics"],
            },
            "best": {
                "samples": 5000 * (i + 1),
                "step": 0,
                "metric": "caption_of_10",
                "value": 0.9,
                "metrics": best,
            },
        }
    report = build_report(doc, measured={"device": "cpu", "threads": 2})
    (entry,) = report["checkpoints"]  # "b" kept no best state
    assert entry["family"] == "a" and entry["metric"] == "caption_of_10"
    assert entry["best"]["samples"] == [5000, 10000] and entry["last"]["samples"] == [20000] * 2
    assert (entry["last"]["validation"], entry["best"]["validation"]) == (0.8, 0.9)
    assert set(entry["best"]["test"]) == {"caption_of_10", "vqa_accuracy", "cider"}
    last_mean = np.mean([s["metrics"]["cider"]["value"] for s in doc["families"]["a"]["seeds"]])
    assert entry["last"]["test"]["cider"] == pytest.approx(last_mean)
    assert entry["best"]["test"]["cider"] == pytest.approx(last_mean + 0.05)
    # the table and the verdict read the last checkpoint only
    assert report["table"] == plain["table"] and report["verdict"] == plain["verdict"]
    html = _checkpoints(report)
    assert "best on validation" in html and "5,000, 10,000" in html and "CIDEr-D" in html
    assert _checkpoints(plain) == ""
