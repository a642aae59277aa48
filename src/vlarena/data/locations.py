"""Where vlarena finds its data sources and keeps its caches, overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path

from vlarena.data.errors import DataUnavailableError

EMOJI_PACKAGE = "emoji-datasource-twitter"
EMOJI_PACKAGE_SPEC = f"{EMOJI_PACKAGE}@16.0.0"
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# src/vlarena/data/locations.py -> the checkout's root, where `make setup` puts .deps/.
_CHECKOUT_ROOT = Path(__file__).resolve().parents[3]


def cache_dir() -> Path:
    """The directory for exported built-ins, downloaded images and other caches (created)."""
    if explicit := os.environ.get("VLARENA_CACHE_DIR"):
        path = Path(explicit)
    elif xdg := os.environ.get("XDG_CACHE_HOME"):
        path = Path(xdg) / "vlarena"
    else:
        path = Path.home() / ".cache" / "vlarena"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fashion_mnist_dir() -> Path:
    """The directory holding Fashion-MNIST's four idx.gz files."""
    explicit = os.environ.get("VLARENA_FASHION_MNIST_DIR")
    path = Path(explicit) if explicit else DEFAULT_FASHION_MNIST_DIR
    missing = [name for name in FASHION_MNIST_FILES if not (path / name).is_file()]
    if missing:
        raise DataUnavailableError(
            f"Fashion-MNIST not found in {path} (missing {', '.join(missing)}). Install it with "
            "`make setup` or `sudo apt-get install dataset-fashion-mnist`, or point "
            "VLARENA_FASHION_MNIST_DIR at a directory holding the idx.gz files."
        )
    return path


def _emoji_candidate_dirs() -> list[Path]:
    """The places searched for the emoji package when VLARENA_EMOJI_DIR is not set, in order."""
    return [
        Path.cwd() / ".deps" / "node_modules" / EMOJI_PACKAGE,
        _CHECKOUT_ROOT / ".deps" / "node_modules" / EMOJI_PACKAGE,
        Path("/usr/lib/node_modules") / EMOJI_PACKAGE,
        Path("/usr/local/lib/node_modules") / EMOJI_PACKAGE,
    ]


def emoji_dir() -> Path:
    """The root of the npm package emoji-datasource-twitter (emoji.json, img/twitter/64/)."""
    if explicit := os.environ.get("VLARENA_EMOJI_DIR"):
        path = Path(explicit)
        if not (path / "emoji.json").is_file():
            raise DataUnavailableError(
                f"VLARENA_EMOJI_DIR={path} has no emoji.json; point it at the root of the npm "
                f"package {EMOJI_PACKAGE}."
            )
        return path
    candidates = _emoji_candidate_dirs()
    for path in candidates:
        if (path / "emoji.json").is_file():
            return path
    searched = ", ".join(str(path) for path in candidates)
    raise DataUnavailableError(
        f"the emoji images ({EMOJI_PACKAGE}) are not installed (searched {searched}). Install "
        f"them with `make setup`, or `npm install --prefix .deps {EMOJI_PACKAGE_SPEC}`, or point "
        "VLARENA_EMOJI_DIR at the package's root."
    )
