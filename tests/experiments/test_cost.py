"""Cost accounting: parameters learned at any stage (VL-JEPA's Y-decoder included) and each
stage's samples and time, in metrics.json v2; v1 documents still load."""

from __future__ import annotations

from vlarena.evaluation.report.comparison import build_report, learned_parameters


def test_learned_parameters_include_the_y_decoder(tiny_compare, tiny_models):
    families = tiny_compare["metrics"]["families"]
    assert tiny_compare["metrics"]["schema"] == "vlarena.metrics/v3"
    jepa = tiny_models["vl-jepa"]
    decoder = sum(p.numel() for p in jepa.y_decoder.parameters())
    body = families["vl-jepa"]
    assert body["learnedParameters"] == body["trainableParameters"] + decoder
    assert body["learnedParameters"] + body["frozenParameters"] == body["totalParameters"]
    stages = body["seeds"][0]["stages"]
    assert stages["ydecoder"]["learnedParameters"] == decoder
    assert stages["main"]["samples"] == 8192 and stages["ydecoder"]["seconds"] > 0
    token = families["token-vlm"]
    assert token["learnedParameters"] == token["trainableParameters"]  # one stage
    assert set(token["seeds"][0]["stages"]) == {"main"}
    report = build_report(tiny_compare["metrics"])
    row = next(r for r in report["table"] if r["key"] == "learnedParameters")
    assert row["values"]["vl-jepa"]["mean"] == body["learnedParameters"]


def test_a_v1_document_reads_its_trainable_parameters_as_learned():
    assert learned_parameters({"trainableParameters": 7}) == 7
    assert learned_parameters({"trainableParameters": 7, "learnedParameters": 9}) == 9
