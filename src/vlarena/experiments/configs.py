"""The typed job spec turned into the ML core's configs, by field name: `Hyperparameters` and
`Budget` → `TrainConfig`, `Evaluation` → `EvalConfig`; no table translates between them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vlarena.evaluation.evaluate import EvalConfig
from vlarena.evaluation.report.cost import NodeType
from vlarena.evaluation.report.report import ReportConfig
from vlarena.evaluation.report.selective import SelectiveConfig
from vlarena.jobs.spec import Budget, DatasetSpec, Evaluation, Hyperparameters, ReportOptions
from vlarena.training.loop import TrainConfig

# Evaluation fields that size the learning curve rather than the final evaluation.
CURVE_FIELDS = frozenset({"curve_images", "curve_points"})
CURVE_IMAGES = 100
CURVE_POINTS = 5


def train_values(
    hyperparameters: Hyperparameters, budget: Budget, seed: int | None = None
) -> dict[str, Any]:
    """The TrainConfig fields a spec sets (unset ones keep the loop's defaults)."""
    values = hyperparameters.model_dump(exclude_none=True)
    if budget.samples is not None:
        values["budget_samples"] = budget.samples
    if budget.steps is not None:
        values["budget_steps"] = budget.steps
    if seed is not None:
        values["seed"] = seed
    return values


def eval_config(evaluation: Evaluation) -> EvalConfig:
    """The final evaluation's config: every set field of `evaluation` but the curve's."""
    values = evaluation.model_dump(exclude_none=True, exclude=set(CURVE_FIELDS))
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return EvalConfig(**fields)


@dataclass(frozen=True)
class RunSpec:
    """What one training run needs, read from a train or compare spec."""

    family: str
    model_config: dict[str, Any]
    dataset: DatasetSpec
    train: dict[str, Any]  # the TrainConfig fields the spec sets
    evaluation: Evaluation

    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.train)

    def eval_config(self) -> EvalConfig:
        return eval_config(self.evaluation)

    @property
    def curve_images(self) -> int:
        return self.evaluation.curve_images or CURVE_IMAGES

    @property
    def curve_points(self) -> int:
        points = self.evaluation.curve_points
        return CURVE_POINTS if points is None else points

    def describe(self) -> dict[str, Any]:
        """What the run directory records of the run: enough to reopen its data and read its config."""
        return {
            "family": self.family,
            "dataset": self.dataset.model_dump(mode="json", by_alias=True, exclude_none=True),
            "train": dict(self.train),
            "evaluation": self.evaluation.model_dump(mode="json", by_alias=True, exclude_none=True),
        }


def train_config_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def eval_config_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(EvalConfig)}


def report_config(
    options: ReportOptions | None, evaluation: Evaluation | None = None
) -> ReportConfig:
    """The report's config from a compare job's `report` options.

    Without options, a job that evaluates on few images (`evaluation.maxImages`, a smoke test)
    gets a report sized alike: as many probe images, a stream per 32 of them.
    """
    cfg = ReportConfig()
    max_images = evaluation.max_images if evaluation is not None else None
    if max_images:
        cfg.probe_images = min(cfg.probe_images, max_images)
        if cfg.selective:
            cfg.selective.streams = max(1, min(cfg.selective.streams, max_images // 32))
    if options is None:
        return cfg
    cfg.probes = options.probes
    if options.probe_images is not None:
        cfg.probe_images = options.probe_images
    if options.selective_streams is not None:
        streams = options.selective_streams
        cfg.selective = SelectiveConfig(streams=streams) if streams > 0 else None
    if options.nodes is not None:
        cfg.nodes = tuple(NodeType.from_dict(n) for n in options.nodes)
    return cfg
