"""Faults in training: a diverged loss ends the run at once as a deterministic failure, and a
torn latest checkpoint falls back to the one before it instead of failing every retry, and a
damaged feature cache is computed again."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlarena.errors import DeterministicFailure
from vlarena.events import LogEvent, ignore
from vlarena.experiments.inputs import visual_inputs
from vlarena.models.base import AuxiliaryStage
from vlarena.models.registry import build_model, make_config
from vlarena.training.auxiliary import train_auxiliary
from vlarena.training.examples import ExampleSource
from vlarena.training.loop import (
    NonFiniteLoss,
    StopRequested,
    TrainConfig,
    Trainer,
    previous_checkpoint,
)

CONFIG = dict(budget_steps=6, batch_size=8, warmup_steps=2, checkpoint_every_steps=2)


def _token_vlm(splits):
    source = ExampleSource(splits.train, 0.25)
    torch.manual_seed(0)
    model = build_model("token-vlm", make_config("token-vlm", {"preset": "tiny"}), source.texts())
    return model, source


@pytest.fixture(scope="module")
def train_visual(tiny_splits):
    model, _ = _token_vlm(tiny_splits)
    return visual_inputs(model, tiny_splits.train, tiny_splits.full, ignore)


def _stop_after(steps: int):
    polls = iter(range(steps))
    return lambda: next(polls, None) is None


def test_a_non_finite_loss_is_a_deterministic_failure_naming_the_step(tiny_splits, train_visual):
    model, source = _token_vlm(tiny_splits)
    with torch.no_grad():
        model.projector.fc1.weight.fill_(math.inf)
    trainer = Trainer(model, train_visual, source, TrainConfig(budget_steps=2, batch_size=8))
    with pytest.raises(NonFiniteLoss) as failure:
        trainer.fit()
    assert isinstance(failure.value, DeterministicFailure)
    assert "at step 1 (8 samples seen)" in str(failure.value)


def test_a_non_finite_loss_in_an_auxiliary_stage_is_a_deterministic_failure():
    weight = torch.nn.Parameter(torch.ones(2))
    stage = AuxiliaryStage(
        name="ydecoder",
        module=torch.nn.ParameterList([weight]),
        loss=lambda _gen: (weight * float("nan")).sum(),
        steps=3,
        batch_size=4,
        learning_rate=1e-3,
        texts=1,
        warmup_steps=0,
    )
    with pytest.raises(NonFiniteLoss, match=r"ydecoder: the loss became nan by step 3 \(12"):
        train_auxiliary(stage, seed=0)


def test_a_torn_latest_checkpoint_resumes_from_the_previous_one(
    tiny_splits, train_visual, tmp_path
):
    straight, source = _token_vlm(tiny_splits)
    Trainer(straight, train_visual, source, TrainConfig(**CONFIG)).fit()

    checkpoint = tmp_path / "checkpoint.pt"
    model, source = _token_vlm(tiny_splits)
    stopped = Trainer(
        model,
        train_visual,
        source,
        TrainConfig(**CONFIG),
        checkpoint=checkpoint,
        should_stop=_stop_after(3),
    )
    with pytest.raises(StopRequested):
        stopped.fit()
    # Checkpointed at step 2, then at step 3 on the stop: the one at step 2 is kept beside it.
    assert torch.load(previous_checkpoint(checkpoint), weights_only=True)["step"] == 2
    torn = checkpoint.read_bytes()
    checkpoint.write_bytes(torn[: len(torn) // 2])

    events: list = []
    model, source = _token_vlm(tiny_splits)
    resumed = Trainer(
        model,
        train_visual,
        source,
        TrainConfig(**CONFIG),
        checkpoint=checkpoint,
        on_event=events.append,
    )
    result = resumed.fit()
    logs = [e for e in events if isinstance(e, LogEvent)]
    assert any(e.level == "warning" and "checkpoint.pt cannot be read" in e.message for e in logs)
    assert any(
        e.level == "warning" and "resumed from checkpoint at step 2" in e.message for e in logs
    )
    assert result.steps == 6
    # Resumed exactly (parameters, optimiser and random state of step 2): as if never stopped.
    for (name, a), b in zip(
        straight.trainable_state_dict().items(), model.trainable_state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_no_readable_checkpoint_trains_from_the_start(tiny_splits, train_visual, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"torn")
    previous_checkpoint(checkpoint).write_bytes(b"")
    events: list = []
    model, source = _token_vlm(tiny_splits)
    cfg = TrainConfig(budget_steps=2, batch_size=8)
    result = Trainer(
        model, train_visual, source, cfg, checkpoint=checkpoint, on_event=events.append
    ).fit()
    assert result.steps == 2
    assert any(isinstance(e, LogEvent) and "training from the start" in e.message for e in events)
    assert torch.load(checkpoint, weights_only=True)["step"] == 2


def test_a_damaged_feature_cache_is_encoded_again(tiny_splits, train_visual, vlarena_cache):
    from vlarena.experiments.features import cached_features

    model, _ = _token_vlm(tiny_splits)
    table = cached_features(model.x_encoder, tiny_splits.full)
    ids = [r.id for r in tiny_splits.full.records]
    features = next(
        p / "features.npy"
        for p in vlarena_cache.glob("features/*")
        if [str(i) for i in np.load(p / "ids.npy")] == ids
    )
    features.write_bytes(features.read_bytes()[:100])  # torn
    again = cached_features(model.x_encoder, tiny_splits.full)
    assert again.features.shape == table.features.shape
    assert (again.take(tiny_splits.train) == train_visual).all()
