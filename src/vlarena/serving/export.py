"""Exports a trained model for serving: its ONNX graphs, the vision encoder's FP16 and INT8
variants, their parity with PyTorch and their accuracy on the test split, in one directory."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from vlarena.data.images import load_images
from vlarena.data.locations import cache_dir
from vlarena.data.manifest import Dataset
from vlarena.data.tokenizer import WordPieceTokenizer
from vlarena.errors import UserInputError
from vlarena.evaluation.evaluate import EvalConfig, evaluate_model
from vlarena.events import LogEvent, OnEvent, ProgressEvent, ignore
from vlarena.files import atomic_directory
from vlarena.models.base import VLModel
from vlarena.models.token_vlm import TokenVLM
from vlarena.models.vl_jepa import VLJEPA
from vlarena.serving import graphs
from vlarena.serving.manifest import MANIFEST_FILE, TOKENIZER_FILE, PartSpec, ServingManifest
from vlarena.serving.pipelines import OnnxRunner, ServedModel
from vlarena.serving.quantize import (
    WeightRange,
    cached_variant,
    make_variant,
    qdq_op_counts,
    recipe,
    weight_range,
)
from vlarena.serving.repository import TRITON_TYPES, Batching, TensorSpec

log = logging.getLogger(__name__)

# FP32 parity: the largest absolute difference allowed between a graph and PyTorch.
PARITY_TOLERANCE = 1e-4
CALIBRATION_IMAGES = 64
ACCURACY_IMAGES = 200
PARITY_IMAGES = 4

# Batching per part: the vision encoder dominates the cost, so it waits a little to fill a batch;
# decoding steps wait less (each caption makes one request per token). Under load the queue
# fills a batch before the delay runs out; a lone request waits all of it (measured on a 2-core
# CPU: p50 of one client 5.7 ms at 3 ms delay, 3.4 ms at 1 ms, same throughput at 8 and 32).
PART_BATCHING: dict[str, Batching] = {
    "vision": Batching(32, (8, 16, 32), 1000),
    "predictor": Batching(64, (16, 32, 64), 1000),
    "text_encoder": Batching(64, (16, 32, 64), 1000),
    "decoder_memory": Batching(64, (16, 32, 64), 1000),
    "decoder_step": Batching(64, (8, 16, 32, 64), 500),
    "decoder_score": Batching(256, (64, 128, 256), 1000),
}


def io_specs(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of a graph as Triton sees them: the batch axis dropped, symbolic
    dims as -1."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSpec(value.name, TRITON_TYPES[t.elem_type], dims[1:])

    inputs = tuple(spec(v) for v in graph.input if v.name not in initializers)
    return inputs, tuple(spec(v) for v in graph.output)


def _export_parts(model: VLModel, out: Path) -> dict[str, Path]:
    enc = model.x_encoder
    paths = {name: out / f"{name}.onnx" for name in graphs.part_names(model.family)}
    if enc.frozen:
        shutil.copyfile(graphs.x_encoder_graph(enc), paths["vision"])
    else:
        graphs.export_x_encoder(enc, paths["vision"])
    if isinstance(model, TokenVLM):
        graphs.export_token_memory(model, paths["decoder_memory"])
        graphs.export_decoder_step(model.text, enc.num_tokens, paths["decoder_step"])
        graphs.export_decoder_score(model.text, enc.num_tokens, paths["decoder_score"])
    elif isinstance(model, VLJEPA):
        graphs.export_predictor(model, paths["predictor"])
        graphs.export_text_encoder(model, paths["text_encoder"])
        graphs.export_embedding_memory(model, paths["decoder_memory"])
        graphs.export_decoder_step(
            model.y_decoder.text, model.cfg.decoder_prefix, paths["decoder_step"]
        )
    return paths


def _text_limits(model: VLModel) -> dict[str, int]:
    if isinstance(model, VLJEPA):
        return {
            "maxTextLen": model.y_decoder.text.max_len,
            "maxQueryLen": model.cfg.max_query_len,
            "minilmMaxLen": model.y_encoder.backbone.max_len,
        }
    assert isinstance(model, TokenVLM)
    return {"maxTextLen": model.text.max_len, "maxQueryLen": 0, "minilmMaxLen": 0}


# --- checks --------------------------------------------------------------------------------------
def _max_diff(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@torch.no_grad()
def check_parity(
    model: VLModel, manifest: ServingManifest, images: np.ndarray, test: Dataset
) -> dict[str, Any]:
    """FP32 graphs against PyTorch on a few test images: every output within
    PARITY_TOLERANCE, the same top-1 candidate and the same greedy text."""
    served = ServedModel(manifest, OnnxRunner(manifest))
    report: dict[str, Any] = {"tolerance": PARITY_TOLERANCE, "images": len(images)}
    tokens = asyncio.run(served.image_tokens(images))
    report["vision"] = {"maxAbsDiff": _max_diff(tokens, model.x_encoder(torch.from_numpy(images)))}
    visual = torch.from_numpy(tokens)
    records = test.records[: len(images)]
    candidates = list(dict.fromkeys(c for r in test.records for c in r.captions))[:8]
    questions = [r.questions[0].query if r.questions else None for r in records]

    async def served_outputs() -> dict[str, Any]:
        return {
            "scores": await served.score_candidates(tokens, candidates),
            "scores_q": await served.score_candidates(tokens, candidates, questions),
            "texts": await served.generate(tokens),
            "texts_q": await served.generate(tokens, questions),
            **(
                {
                    "embedding": await served.predict_embedding(tokens, questions),
                    "text_embedding": await served.encode_text(candidates),
                }
                if model.family == "vl-jepa"
                else {}
            ),
        }

    got = asyncio.run(served_outputs())
    want_scores = model.score_candidates(visual, candidates).numpy()
    want_scores_q = model.score_candidates(visual, candidates, questions).numpy()
    report["scores"] = {
        "maxAbsDiff": max(
            _max_diff(got["scores"], want_scores), _max_diff(got["scores_q"], want_scores_q)
        ),
        "sameTop1": bool(
            (got["scores"].argmax(1) == want_scores.argmax(1)).all()
            and (got["scores_q"].argmax(1) == want_scores_q.argmax(1)).all()
        ),
    }
    want_texts = model.generate(visual)
    want_texts_q = model.generate(visual, questions)
    report["generate"] = {
        "sameGreedy": got["texts"] == want_texts and got["texts_q"] == want_texts_q,
        "examples": [
            {"served": s, "torch": t} for s, t in zip(got["texts"], want_texts, strict=True)
        ][:2],
    }
    if isinstance(model, VLJEPA):
        report["predictor"] = {
            "maxAbsDiff": _max_diff(got["embedding"], model.predict_embedding(visual, questions))
        }
        report["text_encoder"] = {
            "maxAbsDiff": _max_diff(got["text_embedding"], model.encode_text(candidates))
        }
    diffs = [v["maxAbsDiff"] for v in report.values() if isinstance(v, dict) and "maxAbsDiff" in v]
    report["ok"] = bool(
        max(diffs) <= PARITY_TOLERANCE
        and report["scores"]["sameTop1"]
        and report["generate"]["sameGreedy"]
    )
    return report


@torch.no_grad()
def precision_accuracy(
    model: VLModel, manifest: ServingManifest, test: Dataset, images: np.ndarray
) -> dict[str, Any]:
    """Top-1 accuracies on the test split with the vision encoder at each precision (the rest
    of the model in FP32), and their deltas to FP32 in points."""
    ds = dataclasses.replace(test, records=test.records[: len(images)])
    cfg = EvalConfig(
        max_images=len(images), metrics=("caption_choice", "zeroshot"), latency_repeats=0
    )
    runner = OnnxRunner(manifest)
    results: dict[str, Any] = {}
    fp32_tokens = None
    for precision in ("fp32", *manifest.parts["vision"].variants):
        served = ServedModel(manifest, runner, precision)
        tokens = asyncio.run(served.image_tokens(images))
        fp32_tokens = tokens if fp32_tokens is None else fp32_tokens
        metrics = evaluate_model(model, ds, torch.from_numpy(tokens), cfg)["metrics"]
        results[precision] = {
            "metrics": {
                k: m["value"]
                for k, m in metrics.items()
                if k.endswith("top1") or k.startswith("caption_of")
            },
            "tokensMaxAbsDiff": _max_diff(tokens, fp32_tokens),
        }
    base = results["fp32"]["metrics"]
    for entry in results.values():
        entry["deltaPoints"] = {
            k: round(100 * (v - base[k]), 3) for k, v in entry["metrics"].items() if k in base
        }
    return {
        "images": len(images),
        "split": "test",
        "splitImages": len(test),
        "precisions": results,
    }


# --- export --------------------------------------------------------------------------------------
def _write_export(
    model: VLModel,
    out: Path,
    calibration_images: np.ndarray,
    test: Dataset,
    accuracy_images: int,
    int8_weights: WeightRange,
    step: Callable[[int], None],
) -> ServingManifest:
    """Writes the export into `out` (an empty directory), reporting each of its steps."""
    paths = _export_parts(model, out)
    step(1)
    # The text side's tokenizer travels with the graphs: the gateway has no model packages.
    shutil.copyfile(WordPieceTokenizer.minilm().path, out / TOKENIZER_FILE)
    variants: dict[str, str] = {}
    recipes = {p: recipe(p, int8_weights) for p in ("fp16", "int8")}
    vision = paths["vision"]
    calibration = {"images": calibration_images.astype(np.float32)}
    for precision in ("fp16", "int8"):
        made = out / f"vision.{precision}.onnx"
        calib = calibration if precision == "int8" else None
        if model.x_encoder.frozen:  # every model over this encoder shares it: made once
            cache = cache_dir() / "encoders" / "variants"
            shutil.copyfile(cached_variant(cache, vision, precision, calib, int8_weights), made)
        else:
            make_variant(vision, made, precision, calib, int8_weights)
        variants[precision] = made.name
    step(2)
    parts = {}
    for name, path in paths.items():
        inputs, outputs = io_specs(path)
        parts[name] = PartSpec(
            name=name,
            file=path.name,
            inputs=inputs,
            outputs=outputs,
            batching=PART_BATCHING[name],
            variants=variants if name == "vision" else {},
            recipes=recipes if name == "vision" else {},
        )
    manifest = ServingManifest(
        family=model.family,
        image_size=model.x_encoder.image_size,
        parts=parts,
        vocabulary=list(model.vocab.wordpiece_ids),
        text=_text_limits(model),
        directory=out,
    )
    size = model.x_encoder.image_size
    parity_images = load_images([r.image for r in test.records[:PARITY_IMAGES]], size)
    manifest.parity = check_parity(model, manifest, parity_images, test)
    manifest.parity["int8QdqOps"] = qdq_op_counts(out / variants["int8"])
    if not manifest.parity["ok"]:
        log.warning("%s: ONNX parity with PyTorch failed: %s", out, manifest.parity)
    step(3)
    n = min(accuracy_images, len(test))
    if model.x_encoder.frozen and n:
        test_images = load_images([r.image for r in test.records[:n]], size)
        manifest.accuracy = precision_accuracy(model, manifest, test, test_images)
    manifest.save(out)
    return manifest


def export_model(
    model: VLModel,
    out_dir: Path,
    *,
    calibration_images: np.ndarray,
    test: Dataset,
    accuracy_images: int = ACCURACY_IMAGES,
    int8_weights: WeightRange | None = None,
    on_event: OnEvent = ignore,
) -> ServingManifest:
    """Writes every graph of `model`, the vision encoder's FP16/INT8 variants and
    `serving.json` (with parity and accuracy) into `out_dir`. `int8_weights` defaults to the
    `int8_weights` setting.

    The export is written into a temporary directory beside `out_dir` and replaces it whole
    once complete: a replica copying an earlier export of the same run never reads a file
    being written, and a failed export leaves the earlier one as it was. A directory that holds
    anything but an export is refused, since it would be replaced."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / MANIFEST_FILE).is_file() and any(out_dir.iterdir()):
        raise UserInputError(
            f"{out_dir} holds files but no {MANIFEST_FILE}: an export replaces its directory "
            "whole, so give a new directory or an earlier export's"
        )
    if int8_weights is None:
        from vlarena.serving.config import get_serving_settings

        int8_weights = weight_range(get_serving_settings().int8_weights)
    started = time.perf_counter()
    model = model.eval()
    steps = 4  # graphs, reduced-precision variants, parity, accuracy

    def step(done: int) -> None:
        on_event(ProgressEvent("export", done, steps, "steps"))

    step(0)
    with atomic_directory(out_dir) as staging:
        manifest = _write_export(
            model, staging, calibration_images, test, accuracy_images, int8_weights, step
        )
    manifest.directory = out_dir
    step(4)
    deltas = {
        p: e["deltaPoints"]
        for p, e in manifest.accuracy.get("precisions", {}).items()
        if p != "fp32"
    }
    on_event(
        LogEvent(
            f"exported {len(manifest.parts)} ONNX graphs to {out_dir} in "
            f"{time.perf_counter() - started:.1f} s; parity "
            f"{'ok' if manifest.parity['ok'] else 'FAILED'}; accuracy deltas vs FP32 "
            f"(points): {json.dumps(deltas)}",
            "info" if manifest.parity["ok"] else "warning",
        )
    )
    return manifest


def exported_files(manifest: ServingManifest) -> list[str]:
    """The files of an export directory, relative to it."""
    names = {"serving.json", TOKENIZER_FILE}
    for part in manifest.parts.values():
        names.add(part.file)
        names.update(part.variants.values())
    return sorted(names)
