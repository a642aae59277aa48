"""The best-on-validation state: kept at the best evaluation point, carried through a resume,
and measured on test beside the last state in a run's record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.conftest import tiny_spec

from vlarena.events import ignore
from vlarena.experiments.inputs import visual_inputs
from vlarena.experiments.selection import checkpoint_metrics, selection_metric
from vlarena.models.registry import build_model, make_config
from vlarena.training.examples import ExampleSource
from vlarena.training.loop import BestState, StopRequested, TrainConfig, Trainer, TrainResult

# Four evaluation points (every 2 of 8 steps of 16 samples); the second has the best value.
CONFIG = dict(
    budget_steps=8, batch_size=16, warmup_steps=2, eval_every_samples=32, checkpoint_every_steps=2
)
VALUES = [0.3, 0.8, 0.5, 0.6]


def _token_vlm(splits, seed: int = 0):
    source = ExampleSource(splits.train, 0.25)
    torch.manual_seed(seed)
    model = build_model("token-vlm", make_config("token-vlm", {"preset": "tiny"}), source.texts())
    return model, source


@pytest.fixture(scope="module")
def train_visual(tiny_splits):
    model, _ = _token_vlm(tiny_splits)
    return visual_inputs(model, tiny_splits.train, tiny_splits.full, ignore)


def _copy(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].to(a[k].device)) for k in a)


class Scripted:
    """Validation points with scripted values, remembering the state shown at each. VQA stays
    the highest throughout: selection must read the true caption among 10 when there is one."""

    def __init__(self, values: list[float]) -> None:
        self.values, self.states = iter(values), []

    def __call__(self, model) -> dict[str, float]:
        self.states.append(_copy(model))
        return {"vqa_accuracy": 0.9, "caption_of_10": next(self.values)}


def test_the_best_state_is_the_one_at_the_best_validation_point(tiny_splits, train_visual):
    model, source = _token_vlm(tiny_splits)
    scripted = Scripted(VALUES)
    trainer = Trainer(
        model,
        train_visual,
        source,
        TrainConfig(**CONFIG),
        evaluate=scripted,
        select=selection_metric,
    )
    result = trainer.fit()
    best = result.best
    assert best is not None and len(scripted.states) == 4
    assert (best.step, best.samples_seen, best.metric, best.value) == (4, 64, "caption_of_10", 0.8)
    assert _same(best.state, scripted.states[1])
    assert not _same(best.state, _copy(model))  # training went on after it
    assert all(v.device.type == "cpu" for v in best.state.values())
    # without a selection metric, no state is kept
    model, source = _token_vlm(tiny_splits)
    short = TrainConfig(**CONFIG | {"budget_steps": 2})
    assert Trainer(model, train_visual, source, short, evaluate=Scripted(VALUES)).fit().best is None


@pytest.mark.parametrize(("after", "best_step"), [(0.6, 4), (0.9, 8)])
def test_the_best_state_survives_a_resume(tiny_splits, train_visual, tmp_path, after, best_step):
    first, source = _token_vlm(tiny_splits)
    scripted = Scripted(VALUES[:3])
    polls = iter(range(100))
    with pytest.raises(StopRequested):
        Trainer(
            first,
            train_visual,
            source,
            TrainConfig(**CONFIG),
            checkpoint=tmp_path / "checkpoint.pt",
            should_stop=lambda: next(polls) == 6,
            evaluate=scripted,
            select=selection_metric,
        ).fit()
    resumed, source = _token_vlm(tiny_splits, seed=123)
    result = Trainer(
        resumed,
        train_visual,
        source,
        TrainConfig(**CONFIG),
        checkpoint=tmp_path / "checkpoint.pt",
        evaluate=Scripted([after]),
        select=selection_metric,
    ).fit()
    assert result.best is not None and result.best.step == best_step
    expected = scripted.states[1] if best_step == 4 else _copy(resumed)
    assert _same(result.best.state, expected)
    assert [p["caption_of_10"] for p in result.curve] == [*VALUES[:3], after]


def test_the_best_state_is_measured_with_the_part_learned_after_the_loop(tiny_splits):
    model, _ = _token_vlm(tiny_splits)
    moved = {k: v + 0.5 if v.is_floating_point() else v for k, v in _copy(model).items()}
    best = BestState(64, 4, "caption_of_10", 0.8, moved)
    curve = [{"samplesSeen": 64, "caption_of_10": 0.8}, {"samplesSeen": 128, "caption_of_10": 0.6}]
    result = TrainResult(8, 128, 0.1, 1.0, 1.0, curve, best=best)
    # stands in for a part trained after the loop (VL-JEPA's Y-decoder): it must stay as is
    kept = model.projector
    last = _copy(model)
    seen: list[dict[str, torch.Tensor]] = []

    def evaluate() -> dict[str, Any]:
        seen.append(_copy(model))
        return {"caption_of_10": {"value": 0.5}}

    out = checkpoint_metrics(model, result, {"caption_of_10": {"value": 0.4}}, evaluate, kept)
    assert len(seen) == 1
    prefix = next(f"{n}." for n, m in model.named_modules() if m is kept)
    for k, v in seen[0].items():
        want = last[k] if k.startswith(prefix) else best.state[k]
        assert torch.equal(v, want.to(v.device)), k
    assert any(k.startswith(prefix) for k in seen[0])
    assert _same(_copy(model), last)  # the last state is back
    assert out["best"] == {
        "samples": 64,
        "step": 4,
        "metric": "caption_of_10",
        "value": 0.8,
        "metrics": {"caption_of_10": {"value": 0.5}},
    }
    assert out["last"] == {
        "samples": 128,
        "metric": "caption_of_10",
        "value": 0.6,
        "metrics": {"caption_of_10": {"value": 0.4}},
    }


def test_a_run_record_holds_the_last_and_the_best_checkpoint(tmp_path: Path):
    from tests.experiments.jobs import run_job

    spec = tiny_spec(
        "train",
        model={"family": "token-vlm", "config": {"preset": "tiny"}},
        budget={"samples": 512},
        export=False,
    )
    spec["evaluation"] = {
        "maxImages": 32,
        "curveImages": 16,
        "curvePoints": 3,
        "latencyRepeats": 0,
        "metrics": ["caption_choice"],
    }
    run_job(spec, tmp_path)
    doc = json.loads((tmp_path / "metrics.json").read_text())
    record = doc["families"]["token-vlm"]["seeds"][0]
    last, best = record["checkpoints"]["last"], record["checkpoints"]["best"]
    assert last["metrics"] == record["metrics"] and last["samples"] == 512
    curve = record["curve"]
    values = [p["caption_of_10"] for p in curve]
    first_max = curve[values.index(max(values))]
    assert best["metric"] == last["metric"] == "caption_of_10"
    assert (best["samples"], best["value"]) == (first_max["samplesSeen"], max(values))
    assert last["value"] == values[-1]
    assert set(best["metrics"]) == set(last["metrics"])
    if best["samples"] == last["samples"]:
        assert best["metrics"] == last["metrics"]
