"""Cancel and deadline reach every phase of a job: asked to stop while evaluating, an evaluate
job and a compare job raise StopRequested at the next progress report instead of finishing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vlarena.errors import StopRequested
from vlarena.events import Event, ProgressEvent, ignore
from vlarena.experiments.cli import StepLimit
from vlarena.experiments.jobs import run_job
from vlarena.files import write_json
from vlarena.jobs.spec import parse_job_spec
from vlarena.models.registry import build_model, make_config, save_model
from vlarena.rundirs import RunDir
from vlarena.training.examples import ExampleSource

DATA = {"name": "fashion-grid", "options": {"n_train": 192, "n_val": 32, "n_test": 64}}
EVALUATION = {
    "maxImages": 16,
    "generateImages": 4,
    "retrievalPools": [8],
    "latencyRepeats": 0,
    "curvePoints": 0,
}


def _train_spec(**extra: Any) -> dict[str, Any]:
    return {
        "type": "train",
        "model": {"family": "token-vlm", "config": {"preset": "tiny"}},
        "dataset": DATA,
        "hyperparameters": {"batchSize": 32, "warmupSteps": 1},
        "budget": {"samples": 64},
        "evaluation": EVALUATION,
        **extra,
    }


class StopIn:
    """Records a job's events and asks it to stop once `phase` has reported `done` units."""

    def __init__(self, phase: str, done: int) -> None:
        self.phase, self.done = phase, done
        self.events: list[Event] = []
        self.asked_at: int | None = None

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        if (
            self.asked_at is None
            and isinstance(event, ProgressEvent)
            and event.phase == self.phase
            and event.done >= self.done
        ):
            self.asked_at = len(self.events)

    def should_stop(self) -> bool:
        return self.asked_at is not None

    def after_asked(self) -> list[Event]:
        assert self.asked_at is not None, f"{self.phase} never reported {self.done}"
        return self.events[self.asked_at :]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_splits) -> Path:
    """A run directory as training leaves it (its model untrained: only evaluation is asked)."""
    run = RunDir(tmp_path_factory.mktemp("stop-source") / "run")
    source = ExampleSource(tiny_splits.train, 0.25)
    model = build_model("token-vlm", make_config("token-vlm", {"preset": "tiny"}), source.texts())
    save_model(model, run.model)
    write_json(run.run_file, {"family": "token-vlm", "dataset": DATA})
    write_json(run.captions, tiny_splits.train.captions())
    return run.path


def test_an_evaluate_job_stops_mid_evaluation(trained_run: Path, tmp_path: Path) -> None:
    spec = {
        "type": "evaluate",
        "source": {"runDir": str(trained_run)},
        "dataset": DATA,
        "evaluation": EVALUATION,
    }
    stop = StopIn("evaluate", 1)
    with pytest.raises(StopRequested, match="during evaluate"):
        run_job(
            parse_job_spec(spec), tmp_path, on_event=stop.on_event, should_stop=stop.should_stop
        )
    assert not stop.after_asked()  # stopped at the report that saw the request
    assert not (tmp_path / "evaluation.json").exists()


def test_a_compare_job_stops_in_its_evaluation_phase(tmp_path: Path) -> None:
    spec = _train_spec(type="compare", families=["token-vlm"], seeds=1, report=False)
    spec["model"] = {"config": {"preset": "tiny"}}
    stop = StopIn("evaluate", 0)
    with pytest.raises(StopRequested, match="during evaluate"):
        run_job(
            parse_job_spec(spec), tmp_path, on_event=stop.on_event, should_stop=stop.should_stop
        )
    assert not stop.after_asked()
    assert not (tmp_path / "metrics.json").exists()
    assert not list(tmp_path.rglob("result.json"))


def test_a_job_asked_to_stop_before_it_starts_loads_nothing(tmp_path: Path) -> None:
    events: list[Event] = []
    with pytest.raises(StopRequested, match="during load-data"):
        run_job(
            parse_job_spec(_train_spec()),
            tmp_path,
            on_event=events.append,
            should_stop=lambda: True,
        )
    assert [e.phase for e in events if isinstance(e, ProgressEvent)] == ["load-data"]


def test_the_cli_step_limit_counts_training_steps_only() -> None:
    limit = StepLimit(2)
    sink = limit.watch(ignore)
    sink(ProgressEvent("load-data", 0, 1))
    assert not limit()  # the job's poll after a phase's report is not a step
    assert not limit() and not limit()  # before steps 1 and 2
    sink(ProgressEvent("train", 2, 4))
    assert limit()  # before step 3
    sink(ProgressEvent("evaluate", 0, 1))
    assert limit()  # once asked, every later poll stops too
