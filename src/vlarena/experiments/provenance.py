"""What made a run, as a hash: its family, resolved model config, train config, dataset
fingerprint and evaluation config (never timestamps or the code's commit). A run directory
keeps it, so a rerun under another spec is refused instead of reporting stale numbers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from typing import Any

from vlarena.errors import UserInputError
from vlarena.experiments.configs import RunSpec
from vlarena.files import read_json, write_json
from vlarena.models.registry import make_config
from vlarena.rundirs import RunDir


class StaleRunError(UserInputError):
    """A run directory that holds a run made by another spec."""


def components(run: RunSpec, dataset_fingerprint: str) -> dict[str, Any]:
    """The parts of a run's identity, resolved (presets expanded, defaults filled in), so two
    specs that mean the same run hash alike."""
    return {
        "family": run.family,
        "model": dataclasses.asdict(make_config(run.family, run.model_config)),
        "train": dataclasses.asdict(run.train_config()),
        "dataset": dataset_fingerprint,
        "evaluation": {
            **dataclasses.asdict(run.eval_config()),
            "curve_images": run.curve_images,
            "curve_points": run.curve_points,
        },
    }


def digest(parts: dict[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} → {b!r}")
    return out


def recorded_hash(run_dir: RunDir) -> str | None:
    """The provenance hash a run directory holds, if any."""
    if not run_dir.provenance.exists():
        return None
    return str(read_json(run_dir.provenance).get("hash"))


def claim_run_dir(run_dir: RunDir, parts: dict[str, Any], *, force: bool = False) -> str:
    """Records the run's provenance in `run_dir`, or checks the one already there.

    A directory that holds a run (a result, a checkpoint or a model) made by another spec, or
    one of unknown provenance, is refused; with `force` its run is removed and the new one
    starts afresh. Returns the hash.
    """
    wanted = digest(parts)
    held = [p for p in (run_dir.result, run_dir.checkpoint, run_dir.model) if p.exists()]
    recorded = read_json(run_dir.provenance) if run_dir.provenance.exists() else None
    if recorded is not None and recorded.get("hash") == wanted:
        return wanted
    if held or recorded is not None:
        if not force:
            changed = (
                _differences(recorded.get("components", {}), parts)
                if recorded is not None
                else ["no provenance recorded (a run from an earlier version)"]
            )
            raise StaleRunError(
                f"{run_dir.path} holds a run made by another spec ({'; '.join(changed[:6])}); "
                "write to another output directory, or retrain it with --force"
            )
        shutil.rmtree(run_dir.path)
    write_json(run_dir.provenance, {"hash": wanted, "components": parts})
    return wanted
