"""Atomic file writes: a reader sees the old file or the new one, never a torn one, even after
a crash (temp file in the same directory, fsync, rename, fsync of the directory)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp makes files 0600; a written file gets the mode an ordinary open() would give it, so
# a reader under another uid (Triton reading an export) can open it. Read once, at import.
FILE_MODE = 0o666 & ~_process_umask()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path | str, *, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside `path` for a writer that takes a path (torch.save, onnx,
    numpy); on success the file is fsynced and renamed over `path`, on failure removed.

    `suffix` keeps an extension that the writer insists on (numpy's `.npy`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, FILE_MODE)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    item: Callable[[], Any] | None = getattr(value, "item", None)  # numpy scalars
    if item is not None and getattr(value, "shape", None) == ():
        return item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_json(path: Path | str, payload: Any, *, indent: int | None = 2) -> None:
    """Writes `payload` as JSON (numpy scalars and paths allowed), atomically."""
    atomic_write_text(path, json.dumps(payload, indent=indent, default=_jsonable) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())
