"""Export: one ONNX graph per part with a dynamic batch axis, FP32 parity with PyTorch, FP16 and
INT8 QDQ variants with their accuracy deltas, and export as the last step of a train job."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import onnx
import pytest
import torch

from vlarena.serving.manifest import ServingManifest
from vlarena.serving.pipelines import OnnxRunner, ServedModel

PARTS = {
    "token-vlm": {"vision", "decoder_memory", "decoder_step", "decoder_score"},
    "vl-jepa": {"vision", "predictor", "text_encoder", "decoder_memory", "decoder_step"},
}


@pytest.mark.parametrize("family", ["token-vlm", "vl-jepa"])
def test_every_part_exports_with_a_dynamic_batch_axis(tiny_exports, family):
    manifest = tiny_exports[family]
    assert set(manifest.parts) == PARTS[family]
    for part in manifest.parts.values():
        graph = onnx.load(str(manifest.path_of(part.name)), load_external_data=False).graph
        for value in [*graph.input, *graph.output]:
            first = value.type.tensor_type.shape.dim[0]
            assert first.dim_param and not first.dim_value, (part.name, value.name)
    reloaded = ServingManifest.load(manifest.directory)
    assert reloaded.parts == manifest.parts
    assert reloaded.vocabulary == manifest.vocabulary


@pytest.mark.parametrize("family", ["token-vlm", "vl-jepa"])
def test_fp32_graphs_match_pytorch(tiny_exports, family):
    parity = tiny_exports[family].parity
    assert parity["ok"], json.dumps(parity, indent=1)
    diffs = {
        k: v["maxAbsDiff"] for k, v in parity.items() if isinstance(v, dict) and "maxAbsDiff" in v
    }
    assert diffs and max(diffs.values()) <= 1e-4, diffs
    assert parity["scores"]["sameTop1"]
    assert parity["generate"]["sameGreedy"]


def test_decoder_step_graph_decodes_the_same_tokens_as_the_kv_cache(
    tiny_models, tiny_exports, tiny_test_visual
):
    """Greedy decoding through the step graph (past keys/values fed back each step) gives the
    PyTorch model's captions, for a batch larger than the parity check's."""
    model, manifest = tiny_models["token-vlm"], tiny_exports["token-vlm"]
    visual = tiny_test_visual[:12]
    served = ServedModel(manifest, OnnxRunner(manifest))
    got = asyncio.run(served.generate(visual.numpy(), max_len=20))
    assert got == model.generate(visual, max_len=20)


def test_served_text_embeddings_use_minilm_tokenization(tiny_models, tiny_exports):
    model, manifest = tiny_models["vl-jepa"], tiny_exports["vl-jepa"]
    texts = ["a bag top left", "An ankle-boot, bottom RIGHT!", "x " * 80]  # cased, punctuated, cut
    served = ServedModel(manifest, OnnxRunner(manifest))
    got = asyncio.run(served.encode_text(texts))
    with torch.no_grad():
        want = model.encode_text(texts).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_text_embeddings_are_kept_per_served_model_and_bounded(
    tiny_exports, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlarena.serving import pipelines

    manifest = tiny_exports["vl-jepa"]
    runner = OnnxRunner(manifest)
    sent: list[int] = []
    run = runner.run

    async def counting(part, precision, inputs, outputs):
        if part == "text_encoder":
            sent.append(len(next(iter(inputs.values()))))
        return await run(part, precision, inputs, outputs)

    monkeypatch.setattr(runner, "run", counting)
    served = ServedModel(manifest, runner)
    labels = ["a bag top left", "a shirt", "an ankle boot", "a shirt"]
    first = asyncio.run(served.encode_text(labels))
    again = asyncio.run(served.encode_text(labels[::-1]))
    # Sent once (three distinct texts), answered from the cache the second time, in order.
    assert sum(sent) == 3
    np.testing.assert_array_equal(again, first[::-1])
    np.testing.assert_allclose(
        first, asyncio.run(ServedModel(manifest, runner).encode_text(labels))
    )
    monkeypatch.setattr(pipelines, "TEXT_CACHE", 2)
    asyncio.run(served.encode_text(["x", "y"]))
    assert list(served._text_embeddings) == ["x", "y"]


@pytest.mark.parametrize("family", ["token-vlm", "vl-jepa"])
def test_tokenising_runs_through_the_offload_off_the_event_loop(
    tiny_exports, tiny_test_visual, family
):
    """The gateway passes its bounded thread pool as `offload`: every tokenising step of a verb
    runs there (not on the event loop), and the scores are those of the inline path."""
    manifest = tiny_exports[family]
    tokens_in = tiny_test_visual[:3].numpy()
    labels = ["a bag top left", "a shirt bottom right", "an ankle boot"]
    threads: list[int] = []

    async def offload(work):
        def recorded():
            threads.append(threading.get_ident())
            return work()

        return await asyncio.to_thread(recorded)

    async def scores(served: ServedModel) -> np.ndarray:
        tokens = await served.image_tokens(tokens_in) if tokens_in.ndim == 4 else tokens_in
        return await served.score_candidates(tokens, labels, ["what is it?"] * 3)

    inline = asyncio.run(scores(ServedModel(manifest, OnnxRunner(manifest))))
    loop_thread = threading.get_ident()
    offloaded = asyncio.run(scores(ServedModel(manifest, OnnxRunner(manifest), offload=offload)))
    np.testing.assert_allclose(offloaded, inline, atol=1e-6)
    assert threads and loop_thread not in threads


@pytest.mark.parametrize("family", ["token-vlm", "vl-jepa"])
def test_int8_variant_is_static_qdq_and_its_accuracy_is_measured(tiny_exports, family):
    manifest = tiny_exports[family]
    assert set(manifest.parts["vision"].variants) == {"fp16", "int8"}
    assert min(manifest.parity["int8QdqOps"].values()) > 0
    precisions = manifest.accuracy["precisions"]
    assert set(precisions) == {"fp32", "fp16", "int8"}
    assert manifest.accuracy["split"] == "test" and manifest.accuracy["images"] == 64
    for entry in precisions.values():
        assert set(entry["deltaPoints"]) == {"caption_of_10", "zeroshot_top1"}
    assert precisions["fp32"]["deltaPoints"]["caption_of_10"] == 0.0
    # FP16 barely moves the features; INT8 moves them more.
    assert precisions["fp16"]["tokensMaxAbsDiff"] < precisions["int8"]["tokensMaxAbsDiff"]


def test_a_train_job_exports_as_its_last_step(tmp_path, tiny_splits):
    from tests.experiments.jobs import run_job

    spec = {
        "type": "train",
        "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
        # the session's tiny data: its features and INT8 calibration are cached already
        "dataset": {"name": "fashion-grid", "options": {"n_train": 192, "n_val": 32, "n_test": 64}},
        "hyperparameters": {"batchSize": 32, "warmupSteps": 2},
        "budget": {"samples": 128},
        "evaluation": {
            "maxImages": 16,
            "generateImages": 4,
            "retrievalPools": [8],
            "latencyRepeats": 0,
            "curvePoints": 0,
        },
    }
    result = run_job(spec, tmp_path)
    exported = [a for a in result["artifacts"] if "/export/" in a]
    assert "run/export/serving.json" in exported
    assert "run/export/vision.int8.onnx" in exported
    for path in exported:
        assert (tmp_path / path).is_file()
    assert ServingManifest.load(tmp_path / "run" / "export").parity["ok"]
