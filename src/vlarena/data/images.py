"""Reading images into (3, size, size) float32 arrays in [-1, 1] with Pillow."""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import urllib.parse
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vlarena.data.errors import ImageError
from vlarena.data.locations import cache_dir
from vlarena.files import atomic_path

DOWNLOAD_TIMEOUT_S = 60
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}$")


def is_url(reference: str) -> bool:
    """Whether an image reference is an http(s) URL rather than a local path."""
    return reference.startswith(("http://", "https://"))


def fetch_image(url: str) -> Path:
    """The local copy of an http(s) image, downloaded once into ``cache_dir()/images/``."""
    suffix_match = _SAFE_SUFFIX.search(urllib.parse.urlparse(url).path)
    suffix = suffix_match.group(0) if suffix_match else ""
    target = cache_dir() / "images" / (hashlib.sha256(url.encode()).hexdigest()[:32] + suffix)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Download beside the target and rename, so a concurrent reader never sees half a file.
    try:
        with (
            atomic_path(target) as partial,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            partial.open("wb") as out,
        ):
            shutil.copyfileobj(response, out)
    except (OSError, ValueError) as err:
        raise ImageError(url, f"download failed: {err}") from err
    return target


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited on white; greyscale and palettes expanded."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


# What Pillow raises on a damaged file: a broken PNG chunk is a SyntaxError, a truncated
# header an EOFError or struct.error, a corrupt deflate stream a zlib.error.
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


def load_image(path_or_url: str, size: int) -> np.ndarray:
    """One image as a (3, size, size) float32 array in [-1, 1], resized bilinearly.

    Non-square images are stretched to a square: built-in datasets are square already, and
    stretching keeps every object in view where a centre crop could cut one off.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    local = fetch_image(path_or_url) if is_url(path_or_url) else Path(path_or_url)
    try:
        with Image.open(local) as image:
            rgb = _to_rgb(image)
    except FileNotFoundError as err:
        raise ImageError(path_or_url, "file not found") from err
    except DECODE_ERRORS as err:
        raise ImageError(path_or_url, f"cannot decode: {err}") from err
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(rgb, dtype=np.float32)  # (H, W, 3) in [0, 255]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)) / 127.5 - 1.0


def load_images(paths: Sequence[str], size: int) -> np.ndarray:
    """Images as one (N, 3, size, size) float32 array in [-1, 1]."""
    batch = np.empty((len(paths), 3, size, size), dtype=np.float32)
    for index, path in enumerate(paths):
        batch[index] = load_image(path, size)
    return batch
