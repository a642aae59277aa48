"""Built-in datasets by name: exported once into the cache, then loaded like any manifest."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlarena.data.emoji import export_emoji
from vlarena.data.errors import DataError
from vlarena.data.fashion_grid import export_fashion_grid
from vlarena.data.locations import cache_dir
from vlarena.data.manifest import MANIFEST_NAME, Dataset, load_manifest
from vlarena.jobs.confinement import Confinement

COMPLETE_MARKER = ".complete"


@dataclass(frozen=True)
class _Builtin:
    export: Callable[..., Path]
    # Bump when an export's files change, so caches made by older code are not reused.
    revision: int


_BUILTINS = {
    "emoji": _Builtin(export_emoji, revision=1),
    "fashion-grid": _Builtin(export_fashion_grid, revision=1),
}


def builtin_names() -> list[str]:
    """The names ``load_dataset`` and ``export_builtin`` accept."""
    return sorted(_BUILTINS)


def _builtin(name: str) -> _Builtin:
    if name not in _BUILTINS:
        raise DataError(f"no built-in dataset {name!r}; built-ins: {', '.join(builtin_names())}")
    return _BUILTINS[name]


def builtin_options(name: str, **options: Any) -> dict[str, Any]:
    """All options of a built-in, defaults filled in; unknown options raise DataError."""
    parameters = inspect.signature(_builtin(name).export).parameters
    defaults = {
        key: parameter.default
        for key, parameter in parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise DataError(
            f"{name} has no option {', '.join(unknown)}; its options: "
            + ", ".join(f"{key}={value!r}" for key, value in defaults.items())
        )
    return defaults | options


def export_builtin(name: str, out_dir: str | os.PathLike[str], **options: Any) -> Path:
    """Write a built-in's manifest.jsonl, images/ and dataset.json; returns the manifest path."""
    return _builtin(name).export(Path(out_dir), **builtin_options(name, **options))


def builtin_cache_dir(name: str, **options: Any) -> Path:
    """Where ``load_dataset`` keeps a built-in's export: datasets/<name>-<hash of options>."""
    key = {
        "name": name,
        "revision": _builtin(name).revision,
        "options": builtin_options(name, **options),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / "datasets" / f"{name}-{digest}"


def load_dataset(
    name_or_path: str | os.PathLike[str],
    *,
    confinement: Confinement | None = None,
    **options: Any,
) -> Dataset:
    """A built-in by name (exported into the cache on first use) or a manifest by path, read
    under a submitted job's `confinement` (see `load_manifest`)."""
    if isinstance(name_or_path, str) and name_or_path in _BUILTINS:
        return load_manifest(_cached_export(name_or_path, options))
    if options:
        raise DataError(
            f"options ({', '.join(sorted(options))}) apply only to the built-in datasets "
            f"({', '.join(builtin_names())})"
        )
    if confinement is not None:
        return load_manifest(name_or_path, confinement=confinement)
    if not Path(name_or_path).exists():
        raise DataError(
            f"{str(name_or_path)!r} is neither a built-in dataset ({', '.join(builtin_names())}) "
            "nor an existing manifest file or directory"
        )
    return load_manifest(name_or_path)


def _cached_export(name: str, options: dict[str, Any]) -> Path:
    """The manifest of a complete cached export, exporting first if there is none.

    Exports go to a staging directory that is renamed into place with its completion marker
    inside, so other processes (DDP ranks, workers sharing a volume) never load half an export.
    """
    target = builtin_cache_dir(name, **options)
    if (target / COMPLETE_MARKER).is_file():
        return target / MANIFEST_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    staging_prefix = f"{target.name}.partial-{socket.gethostname()}-"
    _remove_abandoned_staging(target.parent, staging_prefix)
    staging = target.parent / f"{staging_prefix}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    export_builtin(name, staging, **options)
    marker = {"name": name, "options": builtin_options(name, **options)}
    (staging / COMPLETE_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
    if (target / COMPLETE_MARKER).is_file():  # another process finished first
        shutil.rmtree(staging)
        return target / MANIFEST_NAME
    shutil.rmtree(target, ignore_errors=True)  # an interrupted export without a marker
    try:
        staging.rename(target)
    except OSError:
        if not (target / COMPLETE_MARKER).is_file():
            raise
        shutil.rmtree(staging)
    return target / MANIFEST_NAME


def _remove_abandoned_staging(directory: Path, prefix: str) -> None:
    """Delete this host's staging directories whose exporting process has died."""
    for staging in directory.glob(f"{prefix}*"):
        pid = staging.name.removeprefix(prefix)
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
