"""One typed spec from the API to the loop: every config field the ML core reads is reachable
from the job spec, the spec's enums match the registries, and the CLI, a YAML file and the API
produce the same normalised spec."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

import pytest
import yaml

from vlarena.data.registry import builtin_names
from vlarena.errors import UserInputError
from vlarena.evaluation.evaluate import EvalConfig
from vlarena.experiments.cli import job_spec_from_args, register, spec_from_file
from vlarena.experiments.configs import (
    CURVE_FIELDS,
    eval_config,
    eval_config_fields,
    train_config_fields,
    train_values,
)
from vlarena.jobs.spec import (
    MODEL_FAMILIES,
    Budget,
    BuiltinDataset,
    Evaluation,
    Hyperparameters,
    MetricGroup,
    ModelFamily,
    ModelPreset,
    SpecError,
    TextPrior,
    XEncoderName,
    parse_job_spec,
    spec_document,
)
from vlarena.models.base import TEXT_PRIORS
from vlarena.models.registry import PRESETS, family_names
from vlarena.models.x_encoders import X_ENCODERS
from vlarena.training.loop import TrainConfig

# The same settings three ways: flags, the API's JSON, and YAML.
ARGV = [
    "train",
    "--model",
    "vl-jepa",
    "--dataset",
    "fashion-grid",
    "--dataset-option",
    "n_train=64",
    "--preset",
    "tiny",
    "--budget-samples",
    "512",
    "--batch-size",
    "16",
    "--lr",
    "0.002",
    "--seed",
    "3",
    "--eval",
    "maxImages=32",
    "--set",
    "hyperparameters.weightDecay=0.05",
    "--set",
    "evaluation.retrievalPools=[16,32]",
    "--set",
    "modelName=parity-model",
    "--out",
    "unused",
]
AS_JSON = {
    "type": "train",
    "model": {"family": "vl-jepa", "config": {"preset": "tiny"}},
    "dataset": {"name": "fashion-grid", "options": {"n_train": 64}},
    "budget": {"samples": 512},
    "hyperparameters": {
        "batchSize": 16,
        "learningRate": 0.002,
        "seed": 3,
        "weightDecay": 0.05,
    },
    "evaluation": {"maxImages": 32, "retrievalPools": [16, 32]},
    "modelName": "parity-model",
}


def cli_spec(argv: list[str]):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return job_spec_from_args(args, args.command)


def test_every_train_config_field_is_reachable_from_the_spec():
    reachable = set(Hyperparameters.model_fields) | {"budget_samples", "budget_steps"}
    assert train_config_fields() == reachable
    every = {name: 1 for name in Hyperparameters.model_fields}
    values = train_values(Hyperparameters(**every), Budget(samples=64))
    assert set(values) == reachable - {"budget_steps"}
    assert TrainConfig(**values).weight_decay == 1


def test_every_eval_config_field_is_reachable_from_the_spec():
    assert eval_config_fields() == set(Evaluation.model_fields) - CURVE_FIELDS
    cfg = eval_config(Evaluation(seed=4, metrics=["zeroshot"], retrieval_pools=[8], curve_points=3))
    assert cfg.seed == 4 and cfg.metrics == ("zeroshot",) and cfg.retrieval_pools == (8,)
    assert set(get_args(MetricGroup)) == set(EvalConfig().metrics)


def test_the_spec_enums_match_the_registries():
    assert set(get_args(ModelFamily)) == set(MODEL_FAMILIES) == set(family_names())
    assert set(get_args(ModelPreset)) == set(PRESETS)
    assert set(get_args(XEncoderName)) == set(X_ENCODERS)
    assert set(get_args(TextPrior)) == set(TEXT_PRIORS)
    assert set(get_args(BuiltinDataset)) == set(builtin_names())


def test_flags_and_yaml_give_the_api_shape_normalised(tmp_path: Path):
    api = spec_document(parse_job_spec(AS_JSON))
    assert spec_document(cli_spec(ARGV)) == api
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(AS_JSON))
    assert spec_document(spec_from_file(path)) == api
    # --set reaches fields without a flag, on a file too.
    changed = spec_document(spec_from_file(path, ["resources.cpu=2"]))
    assert changed["resources"]["cpu"] == 2


def test_a_bad_setting_names_its_field():
    with pytest.raises(SpecError) as caught:
        cli_spec([*ARGV, "--set", "hyperparameters.batchSize=0"])
    assert caught.value.errors[0][0] == "hyperparameters.batchSize"
    with pytest.raises(SpecError, match=r"model\.config: preset: unknown preset 'huge'"):
        cli_spec([*ARGV, "--set", "model.config.preset=huge"])
    with pytest.raises(SpecError, match=r"hyperparameters\.colour"):
        cli_spec([*ARGV, "--set", "hyperparameters.colour=1"])


COMPARE_ARGV = ["compare", "--dataset", "fashion-grid", "--budget-samples", "64", "--out", "/x"]


def test_a_compare_spec_takes_a_config_block_per_family():
    own = ["vl-jepa:y_lr_mult=0.05", "token-vlm:vocabulary=full", "token-vlm:preset=small"]
    flags = [arg for item in own for arg in ("--family-config", item)]
    spec = cli_spec([*COMPARE_ARGV, "--preset", "tiny", *flags])
    assert spec.model is not None
    assert spec.model.for_family("vl-jepa") == {"preset": "tiny", "y_lr_mult": 0.05}
    assert spec.model.for_family("token-vlm") == {"preset": "small", "vocabulary": "full"}
    api = parse_job_spec({**AS_COMPARE, "model": {"families": {"vl-jepa": {"y_lr_mult": 0.05}}}})
    assert api.model is not None and api.model.for_family("token-vlm") == {}
    with pytest.raises(SpecError, match="unknown preset"):
        parse_job_spec({**AS_COMPARE, "model": {"families": {"vl-jepa": {"preset": "huge"}}}})
    with pytest.raises(SpecError, match=r"model\.families"):
        parse_job_spec({**AS_COMPARE, "model": {"families": {"clip": {}}}})
    with pytest.raises(UserInputError, match="FAMILY:KEY=VALUE"):
        cli_spec([*COMPARE_ARGV, "--family-config", "y_lr_mult=0.05"])


AS_COMPARE = {"type": "compare", "dataset": {"name": "fashion-grid"}, "budget": {"samples": 64}}


SWEEP = {"budgets": [{"samples": 20000}, {"samples": 5000}]}


def test_a_compare_spec_sweeps_budgets_from_flags_or_the_api():
    argv = ["compare", "--dataset", "fashion-grid", "--budgets", "20000,5000", "--out", "/x"]
    sweep = {k: v for k, v in AS_COMPARE.items() if k != "budget"} | SWEEP
    api = parse_job_spec(sweep | {"model": {"config": {}}})
    assert spec_document(cli_spec(argv)) == spec_document(api)
    assert "budget" not in spec_document(api)
    assert [b.samples for b in api.all_budgets] == [5000, 20000]  # sorted, smallest first
    assert [b.samples for b in parse_job_spec(AS_COMPARE).all_budgets] == [64]


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"budgets": [{"samples": 5000}]}, "budgets", "a sweep takes 2 to 8 budgets, got 1"),
        ({"budgets": [{"samples": n} for n in range(1, 10)]}, "budgets", "2 to 8 budgets, got 9"),
        ({"budgets": [{"samples": 5}, {"steps": 9}]}, "budgets", "all count samples or all"),
        ({"budgets": [{"samples": 5}, {"samples": 5}]}, "budgets", "distinct; 5 samples appears"),
        ({"budgets": [{"samples": 5}, {"samples": 0}]}, "budgets.1.samples", "greater than 0"),
        (SWEEP | {"budget": {"samples": 64}}, "", "exactly one of 'budget' and 'budgets'"),
        ({"budget": None}, "", "exactly one of 'budget' and 'budgets'"),
    ],
)
def test_a_bad_sweep_names_its_field(change, path, message):
    spec = {k: v for k, v in (AS_COMPARE | change).items() if v is not None}
    with pytest.raises(SpecError) as caught:
        parse_job_spec(spec)
    assert caught.value.errors[0][0] == path
    assert message in caught.value.errors[0][1]


def test_budgets_flag_takes_sample_counts():
    with pytest.raises(UserInputError, match=r"--budgets takes sample counts.*'5k,20k'"):
        cli_spec(["compare", "--dataset", "fashion-grid", "--budgets", "5k,20k", "--out", "/x"])
