"""One training run end to end (data, visual inputs, the loop, auxiliary stages, the final
evaluation, the run directory), and the evaluation of a saved run on a test set."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from vlarena.data.manifest import Dataset
from vlarena.errors import UserInputError
from vlarena.evaluation.evaluate import EvalConfig, evaluate_model, flat_values
from vlarena.events import MetricEvent, OnEvent, ProgressEvent, emit_log
from vlarena.experiments.configs import RunSpec
from vlarena.experiments.inputs import Splits, open_dataset, visual_inputs
from vlarena.experiments.provenance import claim_run_dir, components
from vlarena.experiments.runtime import apply_thread_setting, run_device
from vlarena.experiments.selection import checkpoint_metrics, selection_metric
from vlarena.files import read_json, write_json
from vlarena.jobs.confinement import Confinement
from vlarena.jobs.spec import DatasetSpec
from vlarena.models.base import VLModel
from vlarena.models.registry import build_model, load_model, make_config, save_model
from vlarena.nn.flops import count_flops
from vlarena.rundirs import RunDir
from vlarena.training.auxiliary import train_auxiliary
from vlarena.training.distributed import DistContext, init_distributed, shutdown_distributed
from vlarena.training.examples import ExampleSource
from vlarena.training.loop import Trainer, previous_checkpoint


class SameDataError(UserInputError):
    """An evaluation asked to score a run on the very data it trained on as if unseen."""


def train_run(
    run: RunSpec,
    run_dir: RunDir,
    *,
    splits: Splits,
    on_event: OnEvent,
    should_stop: Callable[[], bool] = lambda: False,
    force: bool = False,
) -> dict[str, Any]:
    """Trains one model, evaluates it on the test split and writes the run directory; returns
    its result record (the one already there when the same run finished before).

    A directory holding a run of another spec is refused (StaleRunError); `force` retrains.
    """
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_hash = claim_run_dir(run_dir, components(run, splits.full.fingerprint()), force=force)
    if run_dir.result.exists():  # the same run, finished (a resumed compare job skips it)
        return dict(read_json(run_dir.result))
    apply_thread_setting()
    device = run_device()
    dist = init_distributed(device) if "WORLD_SIZE" in os.environ else DistContext()
    tcfg = run.train_config()
    source = ExampleSource(splits.train, tcfg.vqa_fraction)
    torch.manual_seed(tcfg.seed)
    cfg = make_config(run.family, run.model_config)
    model = build_model(run.family, cfg, source.texts())
    # Parameters learned at any stage: the main loop's, then each auxiliary stage's.
    learned = {id(p): p.numel() for p in model.parameters() if p.requires_grad}
    main_learned = sum(learned.values())
    emit_log(
        on_event,
        f"{run.family}: {model.count_parameters():,} trainable parameters; "
        f"{len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test images",
    )
    targets = source.targets()
    distinct = len(set(targets))
    on_event(ProgressEvent("prepare-texts", 0, distinct, "texts"))
    started = time.perf_counter()
    target_flops = model.prepare_texts(targets)
    target_seconds = time.perf_counter() - started
    on_event(ProgressEvent("prepare-texts", distinct, distinct, "texts"))
    emit_log(on_event, f"prepared {distinct} target texts in {target_seconds:.1f} s")
    train_visual = visual_inputs(model, splits.train, splits.full, on_event)
    val_visual = visual_inputs(model, splits.val, splits.full, on_event)
    if tcfg.eval_every_samples is None and run.curve_points > 0:
        tcfg.eval_every_samples = max(1, tcfg.total_samples // run.curve_points)
    quick = EvalConfig.quick(run.curve_images)

    def curve_point(m: VLModel) -> dict[str, float]:
        return flat_values(evaluate_model(m, splits.val, val_visual, quick))

    trainer = Trainer(
        model,
        train_visual,
        source,
        tcfg,
        checkpoint=run_dir.checkpoint,
        on_event=on_event,
        should_stop=should_stop,
        evaluate=curve_point,
        select=selection_metric,
        dist=dist,
        device=device,
    )
    result = trainer.fit()
    if dist.enabled:
        shutdown_distributed()
    if not dist.is_main:
        return {}
    started = time.perf_counter()
    stage = model.auxiliary_stage(
        targets, examples=(train_visual, source.captions), samples=result.samples_seen
    )
    stage_setup_seconds = time.perf_counter() - started
    auxiliary: dict[str, float] = {}
    per_sample = result.flops_per_sample
    stages: dict[str, dict[str, Any]] = {
        # Encoding the distinct target texts once (VL-JEPA's frozen Y-encoder; nothing for the
        # token VLM, whose targets are its token ids).
        "target-encoding": {
            "learnedParameters": 0,
            "texts": distinct,
            "seconds": target_seconds,
            "flops": target_flops,
        },
        "main": {
            "learnedParameters": main_learned,
            "samples": result.samples_seen,
            "seconds": result.train_seconds,
            "samplesPerSecond": result.samples_per_second,
            "flopsPerSample": per_sample,
            "flops": per_sample * result.samples_seen if per_sample is not None else None,
        },
    }
    if stage is not None:
        auxiliary = train_auxiliary(stage, tcfg.seed, on_event)
        own = {id(p): p.numel() for p in stage.module.parameters()}
        learned |= own
        seconds = auxiliary[f"{stage.name}_seconds"] + stage_setup_seconds
        samples = stage.steps * stage.batch_size
        aux_per_sample = auxiliary[f"{stage.name}_flops_per_sample"]
        stages[stage.name] = {
            "learnedParameters": sum(own.values()),
            "samples": samples,
            "seconds": seconds,
            "samplesPerSecond": samples / max(seconds, 1e-9),
            "flopsPerSample": aux_per_sample,
            # its steps, and what it computed first (the predictions it learns from)
            "flops": aux_per_sample * samples + stage.prepare_flops,
        }
        cosine = _validation_cosine(model, val_visual, splits.val)
        if cosine is not None:
            stages[stage.name]["validationCosine"] = cosine
    save_model(model, run_dir.model)
    write_json(run_dir.run_file, run.describe())
    write_json(run_dir.captions, splits.train.captions())
    emit_log(
        on_event,
        f"{run.family}: trained {result.samples_seen} samples in {result.train_seconds:.1f} s; "
        "evaluating",
    )
    test_visual = visual_inputs(model, splits.test, splits.full, on_event)
    started = time.perf_counter()
    evaluation = evaluate_model(
        model,
        splits.test,
        test_visual,
        run.eval_config(),
        train_captions=splits.train.captions(),
        on_event=on_event,
    )
    counted = [st.get("flops") for st in stages.values()]
    train_flops = None if None in counted else sum(float(f) for f in counted if f is not None)
    record = {
        "family": run.family,
        # Training FLOPs of every stage (None when a resumed run ran no step to count).
        "trainFlops": train_flops,
        "inferenceFlops": inference_flops(model, test_visual, splits.test.captions()),
        "seed": tcfg.seed,
        "config": model.describe()["config"],
        "trainableParameters": evaluation["trainable_parameters"],
        "totalParameters": evaluation["total_parameters"],
        "learnedParameters": sum(learned.values()),
        "frozenParameters": evaluation["total_parameters"] - sum(learned.values()),
        "stages": stages,
        "samplesSeen": result.samples_seen,
        "steps": result.steps,
        "samplesPerSecond": result.samples_per_second,
        "trainSeconds": result.train_seconds,
        "evalSeconds": time.perf_counter() - started,
        "finalLoss": result.final_loss,
        "auxiliary": auxiliary,
        "latencyMsPerImage": evaluation.get("latency_ms_per_image"),
        "metrics": evaluation["metrics"],
        "curve": result.curve,
        "samples": evaluation["samples"],
        "model": run_dir.model.name,
        "provenance": run_hash,
    }
    # The best-on-validation checkpoint is measured and reported beside the last one; the
    # comparison reads the last (`metrics`), so the selection never decides (README).
    record["checkpoints"] = checkpoint_metrics(
        model,
        result,
        evaluation["metrics"],
        lambda: evaluate_model(
            model,
            splits.test,
            test_visual,
            dataclasses.replace(run.eval_config(), latency_repeats=0),
            train_captions=splits.train.captions(),
            on_event=on_event,
        )["metrics"],
        keep=stage.module if stage is not None else None,
    )
    on_event(MetricEvent(result.samples_seen, flat_values(evaluation)))
    write_json(run_dir.items, evaluation["items"], indent=None)
    write_json(run_dir.result, record)
    run_dir.checkpoint.unlink(missing_ok=True)
    previous_checkpoint(run_dir.checkpoint).unlink(missing_ok=True)
    return record


def _validation_cosine(model: VLModel, visual: torch.Tensor, val: Dataset) -> float | None:
    """Mean cosine between the model's predicted embedding of each validation image and its
    first caption's target: how aligned the embeddings the Y-decoder reads are (None for a
    model that predicts no embedding, or no captioned validation image)."""
    rows = [i for i, r in enumerate(val.records) if r.captions]
    if not rows:
        return None
    cosine = model.prediction_cosine(visual[rows], [val.records[i].captions[0] for i in rows])
    return None if cosine is None else float(cosine.mean())


@torch.no_grad()
def inference_flops(model: VLModel, visual: torch.Tensor, captions: list[str]) -> dict[str, int]:
    """FLOPs per test image of what serving does after the X-encoder's features: choosing
    among 10 candidate captions, and writing one caption."""
    if len(visual) == 0 or len(captions) < 10:
        return {}
    one = visual[:1].to(model.device)
    _, choose = count_flops(lambda: model.score_candidates(one, captions[:10]))
    _, caption = count_flops(lambda: model.generate(one))
    return {"choose10": choose, "caption": caption}


def trained_dataset(run_dir: RunDir) -> DatasetSpec:
    """The dataset a saved run was trained on, as its run directory recorded it."""
    return DatasetSpec.model_validate(read_json(run_dir.run_file)["dataset"])


def training_captions(run_dir: RunDir, confinement: Confinement | None = None) -> list[str]:
    """The captions of the run's training split: stored beside the model at training time, or
    (runs saved before that) read again from the data it trained on."""
    if run_dir.captions.exists():
        return list(read_json(run_dir.captions))
    return open_dataset(trained_dataset(run_dir), confinement).split("train").captions()


def evaluate_run(
    run_dir: RunDir,
    dataset: DatasetSpec | None,
    cfg: EvalConfig,
    on_event: OnEvent,
    *,
    all_test: bool = False,
    confinement: Confinement | None = None,
) -> dict[str, Any]:
    """Evaluates a saved model on a dataset's test split (default: the one it was trained on),
    reading data under a submitted job's `confinement`.

    On another dataset, a manifest whose records are all marked `split: test` works, and
    `all_test` takes every record as test. What needs training captions (the chance levels of
    CIDEr and BLEU) reads the captions stored in the run.
    """
    apply_thread_setting()
    model = load_model(run_dir.model)
    trained_spec = trained_dataset(run_dir)
    full = open_dataset(dataset or trained_spec, confinement)
    if all_test and (
        dataset is None
        or dataset == trained_spec
        or open_dataset(trained_spec, confinement).content_digest == full.content_digest
    ):
        raise SameDataError(
            f"{run_dir.path} was trained on this very manifest: taking every record as test "
            "data would score it on its own training records (leave the all-records option "
            "out to use the manifest's test split)"
        )
    splits = Splits.for_evaluation(full, all_test=all_test)
    visual = visual_inputs(model, splits.test, splits.full, on_event)
    emit_log(on_event, f"evaluating {run_dir.model} on {len(splits.test)} test images")
    return evaluate_model(
        model,
        splits.test,
        visual,
        cfg,
        train_captions=training_captions(run_dir, confinement),
        on_event=on_event,
    )
