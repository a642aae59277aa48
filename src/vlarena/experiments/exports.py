"""Exports a saved run for serving: its model's ONNX graphs and `serving.json` in the run's
export directory, calibrated on its training split and checked on its test split."""

from __future__ import annotations

from pathlib import Path

from vlarena.data.images import load_images
from vlarena.events import OnEvent, ignore
from vlarena.experiments.inputs import Splits, open_dataset
from vlarena.experiments.runs import trained_dataset
from vlarena.models.registry import load_model
from vlarena.rundirs import RunDir
from vlarena.serving.export import (
    ACCURACY_IMAGES,
    CALIBRATION_IMAGES,
    export_model,
    exported_files,
)
from vlarena.serving.manifest import ServingManifest
from vlarena.serving.quantize import WeightRange

__all__ = ["export_run", "exported_files"]


def export_run(
    run: RunDir,
    *,
    out_dir: Path | None = None,
    splits: Splits | None = None,
    on_event: OnEvent = ignore,
    calibration_images: int = CALIBRATION_IMAGES,
    accuracy_images: int = ACCURACY_IMAGES,
    int8_weights: WeightRange | None = None,
) -> ServingManifest:
    """Exports the model of `run` into `out_dir` (default: the run's export directory).

    `splits` may pass the run's already opened data; otherwise it is opened from what the run recorded.
    """
    model = load_model(run.model)
    if splits is None:
        splits = Splits.for_training(open_dataset(trained_dataset(run)))
    size = model.x_encoder.image_size
    calibration = load_images([r.image for r in splits.train.records[:calibration_images]], size)
    return export_model(
        model,
        out_dir or run.export,
        calibration_images=calibration,
        test=splits.test,
        accuracy_images=accuracy_images,
        int8_weights=int8_weights,
        on_event=on_event,
    )
