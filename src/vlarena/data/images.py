"""Reading images into (3, size, size) float32 arrays in [-1, 1] with Pillow."""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import socket
import ssl
import struct
import time
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
from vlarena.jobs.confinement import Confinement, ConfinementError

DOWNLOAD_TIMEOUT_S = 60
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}$")
_CHUNK_BYTES = 64 * 1024


def is_url(reference: str) -> bool:
    """Whether an image reference is an http(s) URL rather than a local path."""
    return reference.startswith(("http://", "https://"))


def _cached_copy(url: str) -> Path:
    """Where an image URL's download lives: ``cache_dir()/images/<hash of the URL>``."""
    suffix_match = _SAFE_SUFFIX.search(urllib.parse.urlparse(url).path)
    suffix = suffix_match.group(0) if suffix_match else ""
    return cache_dir() / "images" / (hashlib.sha256(url.encode()).hexdigest()[:32] + suffix)


def fetch_image(url: str) -> Path:
    """The local copy of an http(s) image, downloaded once into ``cache_dir()/images/``."""
    target = _cached_copy(url)
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


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to one address resolved and checked beforehand, so a second DNS answer cannot
    send the request elsewhere."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """HTTPS to a checked address, verifying the certificate of the URL's host name."""

    default_port = http.client.HTTPS_PORT

    def connect(self) -> None:
        super().connect()
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)


def download_image(url: str, confinement: Confinement) -> Path:
    """The local copy of an http(s) image fetched under a job's confinement: from a public
    address only (checked after DNS resolution, every time, cached or not), at most
    `image_url_max_bytes`, within `image_url_timeout_seconds`, following no redirect."""
    limit, timeout = confinement.image_url_max_bytes, confinement.image_url_timeout_seconds
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme == "https"
    try:
        host = parts.hostname
        port = parts.port or (http.client.HTTPS_PORT if https else http.client.HTTP_PORT)
        if not host:
            raise ImageError(url, "the URL names no host")
        address = confinement.public_address(host, port)
    except ConfinementError as err:
        raise ImageError(url, err.problem) from err
    except ValueError as err:  # a port out of range
        raise ImageError(url, f"not a valid URL: {err}") from err
    target = _cached_copy(url)
    if target.is_file() and target.stat().st_size <= limit:
        return target
    connection_type = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
    connection = connection_type(host, port, address, timeout)
    deadline = time.monotonic() + timeout
    try:
        connection.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        response = connection.getresponse()
        if response.status != 200:
            where = response.getheader("Location")
            moved = f" (to {where}; give that URL instead)" if where else ""
            raise ImageError(url, f"download failed: HTTP {response.status}{moved}")
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ImageError(url, f"larger than {limit:,} bytes (VLARENA_IMAGE_URL_MAX_BYTES)")
        with atomic_path(target) as partial, partial.open("wb") as out:
            received = 0
            # read1: one receive at a time, so a server that trickles bytes meets the deadline.
            while chunk := response.read1(_CHUNK_BYTES):
                received += len(chunk)
                if received > limit:
                    raise ImageError(
                        url, f"larger than {limit:,} bytes (VLARENA_IMAGE_URL_MAX_BYTES)"
                    )
                if time.monotonic() > deadline:
                    raise ImageError(
                        url, f"took longer than {timeout:g} s (VLARENA_IMAGE_URL_TIMEOUT_SECONDS)"
                    )
                out.write(chunk)
    except (OSError, http.client.HTTPException) as err:
        raise ImageError(url, f"download failed: {err}") from err
    finally:
        connection.close()
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
