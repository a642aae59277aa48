"""The layout of job and run directories, in one place: every other module asks these types for a
path instead of spelling a file name.

A job directory (`<artifact dir>/jobs/<id>/attempt-<n>`, or a CLI's `--out`) holds the job's
spec, its metrics.json and, by job type, one run (`run/`), one run per family and seed
(`<family>/seed<n>/`) or an evaluation. A compare job that sweeps budgets keeps its largest
budget's runs there and each smaller budget's in a job directory of its own under
`budgets/<unit>-<amount>/`. A run directory holds the saved model, what it was
trained from (`run.json`, the training captions), its result, its last checkpoint and its
export for serving.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from vlarena.errors import UserInputError

MODEL_FILE = "model.pt"
RUN_FILE = "run.json"
RESULT_FILE = "result.json"
CHECKPOINT_FILE = "checkpoint.pt"
CAPTIONS_FILE = "train-captions.json"
ITEMS_FILE = "item-scores.json"  # each metric's per-item scores on the test split
PROVENANCE_FILE = "provenance.json"
EXPORT_DIR = "export"
REPORT_DIR = "report"
METRICS_FILE = "metrics.json"
SPEC_FILE = "spec.json"
EVALUATION_FILE = "evaluation.json"
JOB_RESULT_FILE = "job-result.json"  # what `run-job` leaves for the worker that launched it
SINGLE_RUN_DIR = "run"
BUDGETS_DIR = "budgets"
# The SHA-256 of the fencing token of the claim that made an attempt directory.
ATTEMPT_OWNER_FILE = ".attempt-owner"
_ATTEMPT = re.compile(r"attempt-(\d+)")


class RunNotFound(UserInputError, FileNotFoundError):
    """A path that holds no trained run."""


class AttemptOwned(RuntimeError):
    """An attempt's directory belongs to another claim of the same attempt number (one that a
    Redis that lost its last writes handed out twice)."""


@dataclass(frozen=True)
class RunDir:
    """One trained model's directory."""

    path: Path

    @property
    def model(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def result(self) -> Path:
        return self.path / RESULT_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def captions(self) -> Path:
        return self.path / CAPTIONS_FILE

    @property
    def provenance(self) -> Path:
        return self.path / PROVENANCE_FILE

    @property
    def items(self) -> Path:
        return self.path / ITEMS_FILE

    @property
    def export(self) -> Path:
        return self.path / EXPORT_DIR

    @property
    def evaluation(self) -> Path:
        return self.path / EVALUATION_FILE

    @classmethod
    def resolve(cls, path: Path | str) -> RunDir:
        """The run a user means by `path`: a run directory, a train job's directory (its
        `run/`), or a saved model file."""
        path = Path(path)
        if path.is_file() and path.suffix == ".pt":
            return cls(path.parent)
        for candidate in (cls(path), cls(path / SINGLE_RUN_DIR)):
            if candidate.model.is_file():
                return candidate
        raise RunNotFound(f"no {MODEL_FILE} in {path} (give a training run's output directory)")

    @classmethod
    def of_model(cls, model_path: Path | str) -> RunDir:
        """The run a saved model (a registry entry's path) belongs to, or the run directory
        itself when given one; no check that it exists."""
        path = Path(model_path)
        return cls(path.parent if path.suffix == ".pt" else path)


@dataclass(frozen=True)
class JobDir:
    """One job attempt's directory, or the output directory of a CLI run."""

    path: Path

    def file(self, relative: str) -> Path | None:
        """The regular file that a user's `relative` path names inside this directory, or
        None where it names none: outside it (`..`, a link out), absent, not a file, or no
        path at all (a NUL byte)."""
        root = self.path.resolve()
        try:
            target = (root / relative).resolve()
            inside = target.is_relative_to(root) and target.is_file()
        except (OSError, ValueError):
            return None
        return target if inside else None

    @property
    def spec(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def evaluation(self) -> Path:
        return self.path / EVALUATION_FILE

    @property
    def report(self) -> Path:
        return self.path / REPORT_DIR

    @property
    def job_result(self) -> Path:
        return self.path / JOB_RESULT_FILE

    @property
    def single_run(self) -> RunDir:
        """A train job's one run."""
        return RunDir(self.path / SINGLE_RUN_DIR)

    def seed_run(self, family: str, seed: int) -> RunDir:
        """One run of a compare job."""
        return RunDir(self.path / family / f"seed{seed}")

    def at_budget(self, unit: str, amount: int) -> JobDir:
        """The runs and metrics.json of one smaller budget of a compare job's sweep."""
        return JobDir(self.path / BUDGETS_DIR / f"{unit}-{amount}")

    def seed_runs(self) -> list[RunDir]:
        """Every saved run of a compare job, by family and seed."""
        return sorted(
            (RunDir(p.parent) for p in self.path.glob(f"*/seed*/{MODEL_FILE}")),
            key=lambda r: r.path,
        )

    def relative(self, target: Path) -> str:
        """A path inside this directory as an artifact name (POSIX, relative)."""
        return target.relative_to(self.path).as_posix()


@dataclass(frozen=True)
class AttemptsDir:
    """A job's directory on the worker side: one subdirectory per attempt,
    `<artifact dir>/jobs/<id>/attempt-<n>`."""

    path: Path

    @classmethod
    def of_job(cls, artifact_dir: Path, job_id: str) -> AttemptsDir:
        return cls(artifact_dir / "jobs" / job_id)

    def attempt(self, n: int) -> Path:
        return self.path / f"attempt-{n}"

    def attempts(self) -> list[tuple[int, Path]]:
        """The attempts present, oldest first."""
        found = []
        for p in self.path.glob("attempt-*"):
            if m := _ATTEMPT.fullmatch(p.name):
                found.append((int(m.group(1)), p))
        return sorted(found)

    def start(self, n: int, owner: str = "") -> Path:
        """The directory of attempt `n` for the claim whose token is `owner`, made if new.

        A new attempt starts from a copy of the newest earlier one, so it resumes from that
        attempt's last checkpoint while a stale worker of an earlier attempt, should one still
        be alive, can only ever write into its own directory. The directory appears whole, with
        its owner's token inside, or not at all; another owner of the same attempt number gets
        AttemptOwned, never the directory.
        """
        workdir = self.attempt(n)
        owner = hashlib.sha256(owner.encode()).hexdigest()
        if not workdir.exists():
            earlier = [p for k, p in self.attempts() if k < n]
            staging = self.path / f".attempt-{n}.{secrets.token_hex(4)}.making"
            if earlier:
                shutil.copytree(earlier[-1], staging, symlinks=True)
            else:
                staging.mkdir(parents=True)
            (staging / ATTEMPT_OWNER_FILE).write_text(owner)
            try:
                staging.rename(workdir)
            except OSError:  # made meanwhile by another claim: whose it is decides below
                shutil.rmtree(staging, ignore_errors=True)
        marker = workdir / ATTEMPT_OWNER_FILE
        found = marker.read_text() if marker.is_file() else ""
        if found != owner:
            raise AttemptOwned(f"{workdir} belongs to another claim of attempt {n}")
        return workdir

    def prune(self, keep: Path) -> None:
        """Removes the directories of the other attempts once the job has ended."""
        for _, path in self.attempts():
            if path != keep:
                shutil.rmtree(path, ignore_errors=True)
