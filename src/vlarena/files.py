"""Atomic file writes: a reader sees the old file or the new one, never a torn one, even after
a crash (temp file in the same directory, fsync, rename, fsync of the directory); and the same
for a whole directory (`atomic_directory`)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
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
DIR_MODE = 0o777 & ~_process_umask()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    path: Path | str, *, suffix: str = "", keep_previous: Path | None = None
) -> Iterator[Path]:
    """Yields a temporary path beside `path` for a writer that takes a path (torch.save, onnx,
    numpy); on success the file is fsynced and renamed over `path`, on failure removed.

    `suffix` keeps an extension that the writer insists on (numpy's `.npy`). With
    `keep_previous`, the file that `path` held is first renamed there (a checkpoint keeps the
    one before it): a crash between the two renames leaves `keep_previous` and no `path`.
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
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            with open(Path(directory, name), "rb") as written:
                os.fsync(written.fileno())
        _fsync_directory(Path(directory))


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one step (Linux's renameat2 RENAME_EXCHANGE); False where the system
    or the filesystem cannot."""
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc older than glibc 2.28
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextlib.contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """Yields an empty temporary directory beside `path` to fill; on success every file in it
    is fsynced and it replaces `path` whole (swapped in one step where Linux can, else renamed
    aside then in), and the old directory is removed; on failure it is removed and `path` is
    left as it was. A reader never finds a half-written directory under `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(staging, DIR_MODE)  # mkdtemp's 0700 would hide it from a reader of another uid
    try:
        yield staging
        _fsync_tree(staging)
        replaced: Path | None = None
        if not path.exists():
            os.rename(staging, path)
        elif _exchange(staging, path):
            replaced = staging  # now holds the old directory
        else:
            replaced = Path(
                tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent)
            )
            os.rename(path, replaced)  # onto an empty directory: replaces it
            try:
                os.rename(staging, path)
            except BaseException:
                os.rename(replaced, path)
                raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_directory(path.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


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
