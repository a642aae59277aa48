"""The training loop: parameter groups, schedule, exact resume, budgets, stop requests, events."""

from __future__ import annotations

import pytest
import torch

from vlarena.events import ArtifactEvent, LogEvent, ProgressEvent
from vlarena.models.registry import build_model, make_config
from vlarena.training.examples import ExampleSource
from vlarena.training.loop import StopRequested, TrainConfig, Trainer
from vlarena.training.optim import lr_factor, param_groups


def _tiny(family: str, splits, visual, seed: int = 0, **cfg):
    source = ExampleSource(splits.train, 0.25)
    torch.manual_seed(seed)
    model = build_model(family, make_config(family, {"preset": "tiny", **cfg}), source.texts())
    model.prepare_texts(source.targets())
    return model, source


@pytest.fixture(scope="module")
def train_visual(tiny_models, tiny_splits):
    from vlarena.events import ignore
    from vlarena.experiments.inputs import visual_inputs

    model = next(iter(tiny_models.values()))
    return visual_inputs(model, tiny_splits.train, tiny_splits.full, ignore)


def test_no_weight_decay_on_norms_biases_and_scalars(tiny_models):
    model = tiny_models["vl-jepa"]
    groups = param_groups(model, 0.01, model.lr_multipliers())
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            if g["weight_decay"]:
                assert p.dim() >= 2 and "norm" not in names[id(p)]
            else:
                assert p.dim() < 2 or "norm" in names[id(p)]
    # the frozen Y-encoder backbone is in no group
    grouped = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in grouped for p in model.y_encoder.backbone.parameters())


def test_warmup_then_cosine_schedule():
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert all(lr_factor(s, 100, 10, 0.1) >= lr_factor(s + 1, 100, 10, 0.1) for s in range(10, 100))


def test_budget_in_samples_is_met_exactly_with_a_short_last_step():
    cfg = TrainConfig(budget_samples=100, batch_size=32)
    assert cfg.total_steps == 4 and cfg.batch_size_at(3) == 4
    with pytest.raises(ValueError, match="exactly one budget"):
        TrainConfig(budget_samples=10, budget_steps=1)


def test_batches_are_a_pure_function_of_seed_and_step(tiny_splits):
    source = ExampleSource(tiny_splits.train, 0.5)
    assert source.batch(3, 7, 16) == source.batch(3, 7, 16)
    assert source.batch(3, 7, 16) != source.batch(4, 7, 16)
    # over an epoch every image is drawn once
    n = source.n
    rows = [e.row for s in range(n // 8) for e in source.batch(0, s, 8)]
    assert sorted(rows) == list(range(n // 8 * 8)) or len(set(rows)) == len(rows)
    assert any(e.query for e in source.batch(0, 0, 64))


@pytest.mark.parametrize("family", ["token-vlm", "vl-jepa"])
def test_resumed_run_reaches_the_same_parameters(family, tiny_splits, train_visual, tmp_path):
    cfg = dict(budget_steps=6, batch_size=16, warmup_steps=2, checkpoint_every_steps=3)
    straight, source = _tiny(family, tiny_splits, train_visual)
    Trainer(straight, train_visual, source, TrainConfig(**cfg)).fit()

    first, source = _tiny(family, tiny_splits, train_visual)
    calls = iter(range(100))
    with pytest.raises(StopRequested):
        Trainer(
            first,
            train_visual,
            source,
            TrainConfig(**cfg),
            checkpoint=tmp_path / "checkpoint.pt",
            should_stop=lambda: next(calls) == 4,
        ).fit()
    resumed, source = _tiny(
        family, tiny_splits, train_visual, seed=123
    )  # other init: must be overwritten
    events = []
    result = Trainer(
        resumed,
        train_visual,
        source,
        TrainConfig(**cfg),
        checkpoint=tmp_path / "checkpoint.pt",
        on_event=events.append,
    ).fit()
    assert result.steps == 6
    assert any(
        isinstance(e, LogEvent) and "resumed from checkpoint at step 4" in e.message for e in events
    )
    saved = [e for e in events if isinstance(e, ArtifactEvent) and e.kind == "checkpoint"]
    assert saved and saved[-1].step == 6
    a, b = straight.trainable_state_dict(), resumed.trainable_state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_progress_events_carry_samples_rate_and_eta(tiny_compare):
    progress = [
        e for e in tiny_compare["events"] if isinstance(e, ProgressEvent) and e.phase == "train"
    ]
    assert progress and progress[-1].done == progress[-1].total == 8192
    assert all(e.per_second > 0 and e.eta_seconds is not None for e in progress)
    assert {e.run.family for e in progress} == {"token-vlm", "vl-jepa"}


def test_every_long_phase_reports_progress(tiny_compare):
    """A slow job can be told from a stuck one: each phase reports how far it got."""
    phases = {e.phase for e in tiny_compare["events"] if isinstance(e, ProgressEvent)}
    assert {
        "load-data",
        "prepare-texts",
        "train",
        "train-decoder",
        "evaluate",
        "export",
        "report",
    } <= phases
    done = [e for e in tiny_compare["events"] if isinstance(e, ProgressEvent)]
    assert all(0 <= e.done <= e.total for e in done)


def test_frozen_y_encoder_is_unchanged_and_a_small_multiplier_moves_it_less(
    tiny_splits, train_visual
):
    frozen, source = _tiny("vl-jepa", tiny_splits, train_visual)
    before = {k: v.clone() for k, v in frozen.y_encoder.backbone.state_dict().items()}
    Trainer(
        frozen, train_visual, source, TrainConfig(budget_steps=2, batch_size=8, warmup_steps=0)
    ).fit()
    after = frozen.y_encoder.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    slow, source = _tiny("vl-jepa", tiny_splits, train_visual, y_lr_mult=0.05)
    y0 = {n: p.detach().clone() for n, p in slow.y_encoder.backbone.named_parameters()}
    p0 = {n: p.detach().clone() for n, p in slow.predictor.named_parameters()}
    Trainer(
        slow, train_visual, source, TrainConfig(budget_steps=1, batch_size=8, warmup_steps=0)
    ).fit()

    def mean_step(start, module):
        deltas = [
            (p.detach() - start[n]).abs().mean()
            for n, p in module.named_parameters()
            if p.dim() >= 2
        ]
        return float(torch.stack(deltas).mean())

    ratio = mean_step(p0, slow.predictor) / mean_step(y0, slow.y_encoder.backbone)
    # Adam's first step moves each weight by about its learning rate: 1 / 0.05 = 20
    assert 10 < ratio < 40, ratio
