"""Checkpoint selection on validation: which metric picks the best state, and the test metrics
of the last and the best-on-validation checkpoint of a run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from vlarena.evaluation.report.verdict import primary_metrics
from vlarena.models.base import VLModel
from vlarena.training.loop import TrainResult


def selection_metric(point: Mapping[str, float]) -> str | None:
    """The metric of a validation point that picks the best checkpoint: the first primary
    metric of the verdict's use cases that the point has (true caption among 10 where the
    quick evaluation has it), or None."""
    primaries = primary_metrics(point)
    return next(iter(primaries.values()), None)


def checkpoint_metrics(
    model: VLModel,
    result: TrainResult,
    last: dict[str, Any],
    evaluate: Callable[[], dict[str, Any]],
    keep: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """{"last": ..., "best": ...}: each checkpoint's samples seen, its validation value of the
    selection metric and its test metrics (`last`: the model's as it is; `evaluate` measures
    the model). The best state is measured with `keep`'s weights as they are now: a part
    learned after the loop from the last state (VL-JEPA's Y-decoder) serves both. The model
    holds its last state again on return. No "best" without a best state."""
    best = result.best
    final = result.curve[-1] if result.curve else {}
    out: dict[str, Any] = {"last": {"samples": result.samples_seen, "metrics": last}}
    if best is None:
        return out
    out["last"] |= {"metric": best.metric, "value": final.get(best.metric)}
    if best.samples_seen == result.samples_seen:  # the last state is the best one
        metrics = last
    else:
        kept = _module_keys(model, keep)
        last_state = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
        model.load_state_dict({k: v for k, v in best.state.items() if k not in kept}, strict=False)
        try:
            metrics = evaluate()
        finally:
            model.load_state_dict(last_state, strict=False)
    out["best"] = {
        "samples": best.samples_seen,
        "step": best.step,
        "metric": best.metric,
        "value": best.value,
        "metrics": metrics,
    }
    return out


def _module_keys(model: VLModel, module: torch.nn.Module | None) -> set[str]:
    """The state-dict keys of `model` that belong to its submodule `module`."""
    if module is None:
        return set()
    prefix = next(f"{name}." for name, m in model.named_modules() if m is module)
    return {k for k in model.state_dict() if k.startswith(prefix)}
