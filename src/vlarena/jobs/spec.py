"""The job spec users submit: what to run, on what data, with what budget and resources."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from vlarena.errors import UserInputError


class JobType(StrEnum):
    TRAIN = "train"
    EVALUATE = "evaluate"
    COMPARE = "compare"


ModelFamily = Literal["token-vlm", "vl-jepa"]
# Held to the model registries by tests/experiments/test_spec_parity.py: the spec imports no torch.
ModelPreset = Literal["tiny", "small", "base"]
XEncoderName = Literal["efficientnet-lite0", "vit", "hf"]
# Where a family's text side starts (README, "Priors"): from MiniLM or at random.
TextPrior = Literal["pretrained", "scratch"]
BuiltinDataset = Literal["fashion-grid", "emoji"]
MODEL_FAMILIES: tuple[str, ...] = ("token-vlm", "vl-jepa")

MetricGroup = Literal[
    "caption_choice", "retrieval", "zeroshot", "zeroshot_heldout", "vqa", "captioning"
]

MAX_PRIORITY = 1000
# A compare job trains every family and seed once per budget: a sweep's cost grows with it.
MAX_SWEEP_BUDGETS = 8
# Model and alias names become parts of Redis keys and URLs.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
# A job's metadata is stored with it and returned with it on every page of `GET /v1/jobs`.
MAX_METADATA_KEYS = 64
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
MetadataValue = Annotated[str, StringConstraints(max_length=1024)]
MAX_PATH_CHARS = 4096


class SpecModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors, not silence."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def _check_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """The names a model config picks from the registries: its preset, text prior and
    X-encoder (the family's own fields are checked where the config is built)."""
    presets, encoders = get_args(ModelPreset), get_args(XEncoderName)
    if "preset" in config and config["preset"] not in presets:
        raise ValueError(
            f"preset: unknown preset {config['preset']!r}; choose one of {', '.join(presets)}"
        )
    priors = get_args(TextPrior)
    if "text_prior" in config and config["text_prior"] not in priors:
        raise ValueError(
            f"text_prior: unknown prior {config['text_prior']!r}; choose one of {', '.join(priors)}"
        )
    encoder = config.get("x_encoder")
    if encoder is not None:
        name = encoder.get("name") if isinstance(encoder, dict) else None
        if name is not None and name not in encoders:
            raise ValueError(
                f"x_encoder.name: unknown X-encoder {name!r}; choose one of {', '.join(encoders)}"
            )
    return config


class ModelSpec(SpecModel):
    family: ModelFamily
    config: dict[str, Any] = Field(
        default_factory=dict,
        description='Overrides of the family\'s config, e.g. {"preset": "tiny"}.',
    )

    _config_names = field_validator("config")(_check_model_config)


class ModelOverrides(SpecModel):
    config: dict[str, Any] = Field(
        default_factory=dict,
        description='Overrides of every compared family\'s config, e.g. {"preset": "tiny"}.',
    )
    families: dict[ModelFamily, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-family overrides applied over `config`: what one family has and the "
        'other lacks, or a size per family, e.g. {"vl-jepa": {"y_lr_mult": 0.05}, '
        '"token-vlm": {"vocabulary": "full"}}.',
    )

    _config_names = field_validator("config")(_check_model_config)

    @field_validator("families")
    @classmethod
    def _family_config_names(
        cls, families: dict[ModelFamily, dict[str, Any]]
    ) -> dict[ModelFamily, dict[str, Any]]:
        for config in families.values():
            _check_model_config(config)
        return families

    def for_family(self, family: str) -> dict[str, Any]:
        """The config overrides of one family: the shared ones, then its own."""
        own = {str(name): config for name, config in self.families.items()}.get(family, {})
        return {**self.config, **own}


class DatasetSpec(SpecModel):
    name: BuiltinDataset | None = Field(default=None, description="A built-in dataset.")
    uri: str | None = Field(
        default=None,
        max_length=MAX_PATH_CHARS,
        description="Absolute path of a JSONL manifest (or file:// URI).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options of a built-in dataset, e.g. n_train."
    )

    @field_validator("uri")
    @classmethod
    def _absolute_manifest(cls, uri: str | None) -> str | None:
        if uri is None:
            return None
        path = uri.removeprefix("file://")
        if not PurePosixPath(path).is_absolute():
            raise ValueError("must be an absolute path or a file:// URI")
        return path

    @model_validator(mode="after")
    def _name_or_uri(self) -> DatasetSpec:
        if (self.name is None) == (self.uri is None):
            raise ValueError("give exactly one of 'name' (a built-in dataset) and 'uri'")
        return self


class Hyperparameters(SpecModel):
    """The optimiser's and training loop's settings; unset ones take the loop's defaults."""

    learning_rate: float | None = Field(default=None, gt=0, le=10)
    batch_size: int | None = Field(default=None, ge=1, le=65_536)
    weight_decay: float | None = Field(default=None, ge=0)
    warmup_steps: int | None = Field(default=None, ge=0)
    min_lr_ratio: float | None = Field(default=None, ge=0, le=1)
    grad_clip: float | None = Field(default=None, gt=0)
    seed: int | None = Field(default=None, ge=0)
    vqa_fraction: float | None = Field(default=None, ge=0, le=1)
    eval_every_samples: int | None = Field(default=None, gt=0)
    checkpoint_every_steps: int | None = Field(default=None, gt=0)
    log_every_steps: int | None = Field(default=None, gt=0)


class Evaluation(SpecModel):
    """How much of the test split each metric reads, and the learning curve's points."""

    max_images: int | None = Field(default=None, gt=0)
    caption_choices: int | None = Field(default=None, ge=2)
    retrieval_pools: list[int] | None = Field(default=None, min_length=1)
    retrieval_repeats: int | None = Field(default=None, ge=1)
    generate_images: int | None = Field(default=None, ge=0)
    latency_repeats: int | None = Field(default=None, ge=0)
    curve_images: int | None = Field(default=None, gt=0)
    curve_points: int | None = Field(default=None, ge=0)
    seed: int | None = Field(
        default=None, ge=0, description="Seed of the evaluation's draws: distractors, pools."
    )
    metrics: list[MetricGroup] | None = Field(
        default=None, min_length=1, description="The metric groups to measure (default: all)."
    )


class Budget(SpecModel):
    samples: int | None = Field(default=None, gt=0, description="Training samples to see.")
    steps: int | None = Field(default=None, gt=0, description="Optimiser steps to take.")

    @model_validator(mode="after")
    def _one_unit(self) -> Budget:
        if (self.samples is None) == (self.steps is None):
            raise ValueError("give exactly one of 'samples' and 'steps'")
        return self

    @property
    def unit(self) -> Literal["samples", "steps"]:
        return "samples" if self.samples is not None else "steps"

    @property
    def amount(self) -> int:
        amount = self.samples if self.samples is not None else self.steps
        assert amount is not None  # _one_unit holds one of the two
        return amount


class Resources(SpecModel):
    cpu: float | None = Field(default=None, gt=0, description="CPU cores.")
    memory: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$",
        description="Memory as a Kubernetes quantity, e.g. 8Gi.",
    )
    gpus: int = Field(
        default=0, ge=0, le=64, description="GPUs; > 0 sends the job to a GPU worker."
    )
    gpu_type: str | None = Field(default=None, max_length=128, description="e.g. nvidia-h100.")
    nodes: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Nodes; > 1 runs a train job as a Kubernetes Job of `nodes` pods (torchrun, "
        "DDP), each with `gpus` GPUs, launched by a worker with Kubernetes enabled.",
    )


class Source(SpecModel):
    """The trained run an evaluate job reads: a job, a registered model, or a run directory."""

    job_id: str | None = Field(default=None, max_length=64)
    model: str | None = Field(
        default=None, max_length=128, description="A registered model's name."
    )
    version: int | None = Field(default=None, ge=1)
    alias: str | None = Field(default=None, max_length=128)
    run_dir: str | None = Field(
        default=None, max_length=MAX_PATH_CHARS, description="Absolute path of a train job's run."
    )

    @model_validator(mode="after")
    def _one_reference(self) -> Source:
        # The gateway resolves a jobId or model into the runDir it names and keeps both.
        references = [x for x in (self.job_id, self.model) if x is not None]
        if len(references) > 1 or not (references or self.run_dir is not None):
            raise ValueError("give exactly one of 'jobId', 'model' and 'runDir'")
        if self.model is None and (self.version is not None or self.alias is not None):
            raise ValueError("'version' and 'alias' go with 'model'")
        if self.model is not None and self.version is not None and self.alias is not None:
            raise ValueError("give 'version' or 'alias', not both")
        if self.run_dir is not None and not PurePosixPath(self.run_dir).is_absolute():
            raise ValueError("'runDir' must be an absolute path")
        return self


class PlatformFields(SpecModel):
    """What every job type shares: scheduling, retries and bookkeeping."""

    dataset: DatasetSpec | None = None
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    resources: Resources = Field(default_factory=Resources)
    priority: int = Field(
        default=0,
        ge=-MAX_PRIORITY,
        le=MAX_PRIORITY,
        description="Higher runs first; equal priorities run in submission order.",
    )
    max_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="Attempts after a failure or a lost worker. Attempts that lose their worker "
        "also count against the platform's poison-job limit (VLARENA_POISON_JOB_LIMIT, 5 by "
        "default): a job that reaches it ends FAILED with PoisonJob even with retries left.",
    )
    active_deadline_seconds: int | None = Field(
        default=None, gt=0, description="Fail the job this long after it first started."
    )
    submission_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Idempotency key: submitting the same id again returns the same job.",
    )
    metadata: dict[MetadataKey, MetadataValue] = Field(
        default_factory=dict,
        max_length=MAX_METADATA_KEYS,
        description=f"Your labels: at most {MAX_METADATA_KEYS} keys of 1 to 128 characters, "
        "values of at most 1024.",
    )
    validate_only: bool = Field(
        default=False, description="Validate and return the normalised spec; create nothing."
    )

    @model_validator(mode="after")
    def _multi_node_trains_only(self) -> PlatformFields:
        if self.resources.nodes > 1 and getattr(self, "type", "train") != "train":
            raise ValueError(
                "resources.nodes > 1 (multi-node) applies to train jobs only; use nodes: 1"
            )
        return self


class TrainJobSpec(PlatformFields):
    type: Literal["train"]
    model: ModelSpec
    dataset: DatasetSpec
    budget: Budget
    model_name: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Registry name of the trained model; default: `<family>-<dataset>`.",
    )
    export: bool = Field(
        default=True, description="Export the model for serving (ONNX, FP16, INT8) at the end."
    )


class EvaluateJobSpec(PlatformFields):
    type: Literal["evaluate"]
    source: Source
    model: ModelSpec | None = None
    all_records_are_test: bool = Field(
        default=False,
        description="Take every record of the dataset as test data, whatever its split field.",
    )


class ReportOptions(SpecModel):
    probes: bool = Field(
        default=True, description="Load the models for attention/embedding maps and latency."
    )
    probe_images: int | None = Field(default=None, ge=1, le=10_000)
    selective_streams: int | None = Field(
        default=None, ge=0, le=256, description="Selective-decoding streams; 0 skips it."
    )
    nodes: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=64,
        description="Node prices for the cost section: name, device, usdPerHour…",
    )


class CompareJobSpec(PlatformFields):
    type: Literal["compare"]
    dataset: DatasetSpec
    budget: Budget | None = Field(
        default=None, description="Every run's training budget; give this or `budgets`."
    )
    budgets: list[Budget] | None = Field(
        default=None,
        description=f"A budget sweep: 2 to {MAX_SWEEP_BUDGETS} budgets in one unit, each "
        "trained over every family and seed with its own schedule; the report tells at which "
        'budget one family overtakes the other. E.g. [{"samples": 5000}, {"samples": 20000}].',
    )
    families: list[ModelFamily] | None = Field(
        default=None, min_length=1, description="Default: every family."
    )
    seeds: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Training seeds per family. The verdict needs at least 3 (with fewer, the "
        "report shows the numbers and gives no verdict).",
    )
    model: ModelOverrides | None = Field(
        default=None, description="Config overrides applied to every family compared."
    )
    report: ReportOptions | bool = Field(
        default=True, description="The comparison report (false skips it), or its options."
    )
    export: bool = Field(
        default=True,
        description="Export each family's first-seed model for serving (ONNX, FP16, INT8).",
    )

    @field_validator("families")
    @classmethod
    def _distinct(cls, families: list[str] | None) -> list[str] | None:
        if families is not None and len(set(families)) != len(families):
            raise ValueError("families must be distinct")
        return families

    @field_validator("budgets")
    @classmethod
    def _sweep(cls, budgets: list[Budget] | None) -> list[Budget] | None:
        if budgets is None:
            return None
        if not 2 <= len(budgets) <= MAX_SWEEP_BUDGETS:
            raise ValueError(
                f"a sweep takes 2 to {MAX_SWEEP_BUDGETS} budgets, got {len(budgets)} "
                "(one budget goes in 'budget')"
            )
        if len({b.unit for b in budgets}) > 1:
            raise ValueError("budgets must all count samples or all count steps")
        amounts = [b.amount for b in budgets]
        if repeated := sorted({a for a in amounts if amounts.count(a) > 1}):
            raise ValueError(
                f"budgets must be distinct; {', '.join(map(str, repeated))} "
                f"{budgets[0].unit} appears more than once"
            )
        return sorted(budgets, key=lambda b: b.amount)

    @model_validator(mode="after")
    def _budget_or_sweep(self) -> CompareJobSpec:
        if (self.budget is None) == (self.budgets is None):
            raise ValueError("give exactly one of 'budget' and 'budgets'")
        return self

    @property
    def all_budgets(self) -> list[Budget]:
        """Every budget the job trains, smallest first: the sweep's, or its one budget."""
        if self.budgets is not None:
            return list(self.budgets)
        assert self.budget is not None  # _budget_or_sweep holds one of the two
        return [self.budget]


AnyJobSpec = TrainJobSpec | EvaluateJobSpec | CompareJobSpec
JobSpec = Annotated[AnyJobSpec, Field(discriminator="type")]
JOB_SPEC_ADAPTER: TypeAdapter[AnyJobSpec] = TypeAdapter(JobSpec)


class SpecError(UserInputError):
    """A job spec that does not validate; `errors` are (field path, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]], source: str = "job spec") -> None:
        self.errors = errors
        lines = "; ".join(f"{path or '(spec)'}: {message}" for path, message in errors)
        super().__init__(f"{source}: {lines}")


def parse_job_spec(data: Any, source: str = "job spec") -> AnyJobSpec:
    """A validated job spec from its JSON shape; raises SpecError naming every bad field."""
    try:
        return JOB_SPEC_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise SpecError(
            [(field_path(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()],
            source,
        ) from exc


# Fields that steer the platform and never reach the ML core's view of a run's identity.
_REQUEST_ONLY_FIELDS = frozenset({"validateOnly", "submissionId"})


def spec_document(spec: TrainJobSpec | EvaluateJobSpec | CompareJobSpec) -> dict[str, Any]:
    """The spec as stored and handed to the worker: camelCase JSON, defaults filled in."""
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {k: v for k, v in data.items() if k not in _REQUEST_ONLY_FIELDS}


def spec_fingerprint(document: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a stored spec: tells a replay from a conflicting reuse."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_multi_node(spec: dict[str, Any]) -> bool:
    """Whether a stored spec runs as a Kubernetes Job of several nodes."""
    return int((spec.get("resources") or {}).get("nodes", 1)) > 1


def queue_for(spec: TrainJobSpec | EvaluateJobSpec | CompareJobSpec) -> str:
    """The worker queue a job waits in: GPU jobs wait for a GPU worker; multi-node jobs wait
    for a worker that can launch them on Kubernetes (their GPUs belong to their pods)."""
    if spec.resources.nodes > 1:
        return "cluster"
    return "gpu" if spec.resources.gpus > 0 else "cpu"


def field_path(loc: Sequence[str | int]) -> str:
    """A validation error's location as the spec's field path, e.g. `budget.samples`.

    Drops the request part (`body`) and the tag pydantic adds for the branch of the job type.
    """
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    if parts and parts[0] in JobType.__members__.values():
        parts = parts[1:]
    return ".".join(str(p) for p in parts)
