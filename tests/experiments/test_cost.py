"""Cost accounting: parameters learned at any stage (VL-JEPA's Y-decoder included), each
stage's samples, time and FLOPs, and inference FLOPs per item, in metrics.json; v1 documents
still load."""

from __future__ import annotations

from vlarena.evaluation.report.comparison import build_report, learned_parameters


def test_learned_parameters_include_the_y_decoder(tiny_compare, tiny_models):
    families = tiny_compare["metrics"]["families"]
    assert tiny_compare["metrics"]["schema"] == "vlarena.metrics/v4"
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
    # the token VLM's targets are its token ids: nothing to encode, no FLOPs there
    assert set(token["seeds"][0]["stages"]) == {"target-encoding", "main"}
    assert token["seeds"][0]["stages"]["target-encoding"]["flops"] == 0
    report = build_report(tiny_compare["metrics"])
    row = next(r for r in report["table"] if r["key"] == "learnedParameters")
    assert row["values"]["vl-jepa"]["mean"] == body["learnedParameters"]


def test_a_v1_document_reads_its_trainable_parameters_as_learned():
    assert learned_parameters({"trainableParameters": 7}) == 7
    assert learned_parameters({"trainableParameters": 7, "learnedParameters": 9}) == 9


def test_training_flops_are_counted_per_stage_and_summed(tiny_compare):
    families = tiny_compare["metrics"]["families"]
    for name, body in families.items():
        run = body["seeds"][0]
        stages = run["stages"]
        main = stages["main"]
        assert main["flopsPerSample"] > 0
        assert main["flops"] == main["flopsPerSample"] * main["samples"]
        assert run["trainFlops"] == sum(s["flops"] for s in stages.values()), name
        assert run["inferenceFlops"]["choose10"] > 0 and run["inferenceFlops"]["caption"] > 0
    jepa = families["vl-jepa"]["seeds"][0]["stages"]
    # the frozen MiniLM encodes each distinct target text once; the Y-decoder trains after
    assert jepa["target-encoding"]["flops"] > 0 and jepa["target-encoding"]["texts"] > 0
    # the Y-decoder's steps, plus predicting the training images it learns from first
    decoder = jepa["ydecoder"]
    steps = decoder["flopsPerSample"] * decoder["samples"]
    assert steps < decoder["flops"] < 1.5 * steps
    # as many samples as the predictor saw, rounded down to whole batches
    assert jepa["main"]["samples"] - 64 < decoder["samples"] <= jepa["main"]["samples"]
    assert -1 <= decoder["validationCosine"] <= 1
    report = build_report(tiny_compare["metrics"])
    row = next(r for r in report["table"] if r["key"] == "validationCosine")
    assert row["values"]["token-vlm"] is None
    assert row["values"]["vl-jepa"]["mean"] == decoder["validationCosine"]
