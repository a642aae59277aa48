"""Images sent to the inference API: base64 or uploaded bytes → pixels (B, 3, S, S) in [-1, 1],
within limits on bytes, pixels and count whose errors say what to change."""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from vlarena.data.images import DECODE_ERRORS, _to_rgb
from vlarena.gateway.errors import ApiError
from vlarena.serving.config import ServingSettings

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
MiB = 1024 * 1024


def from_base64(text: str, index: int) -> bytes:
    """The bytes of a base64 image (a `data:image/...;base64,` prefix allowed)."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            422,
            "validation_error",
            f"images[{index}]: not valid base64; send the file's bytes base64-encoded "
            "(or upload it as multipart/form-data)",
        ) from None


def check_count(n: int, settings: ServingSettings) -> None:
    if n == 0:
        raise ApiError(422, "validation_error", "give an image: `image` or `images`")
    if n > settings.inference_max_batch:
        raise ApiError(
            422,
            "validation_error",
            f"{n} images in one request; at most {settings.inference_max_batch}: split the batch",
        )


def _open(data: bytes, index: int, settings: ServingSettings) -> Image.Image:
    """The image's header, checked against the limits on bytes, format and pixels."""
    limit = settings.inference_max_image_bytes
    if len(data) > limit:
        raise ApiError(
            413,
            "payload_too_large",
            f"images[{index}] is {len(data) / MiB:.1f} MiB; at most {limit / MiB:.1f} MiB: "
            "downscale or recompress it",
        )
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except DECODE_ERRORS:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"images[{index}] is not an image this API reads; send {', '.join(FORMATS)}",
        ) from None
    if image.format not in FORMATS:
        image.close()
        raise ApiError(
            415,
            "unsupported_media_type",
            f"images[{index}] is {image.format}; send {', '.join(FORMATS)}",
        )
    width, height = image.size
    if width * height > settings.inference_max_pixels:
        image.close()
        raise ApiError(
            413,
            "payload_too_large",
            f"images[{index}] is {width}×{height} = {width * height / 1e6:.1f} MP; at most "
            f"{settings.inference_max_pixels / 1e6:.1f} MP: downscale it",
        )
    return image


def _pixels(image: Image.Image, size: int, index: int) -> np.ndarray:
    """One image as (3, size, size) float32 in [-1, 1], preprocessed as training preprocessed
    its images (`vlarena.data.images.load_image`): RGB on white, bilinear resize."""
    with image:
        try:
            rgb = _to_rgb(image)
        except DECODE_ERRORS as exc:
            raise ApiError(
                415, "unsupported_media_type", f"images[{index}] cannot be decoded: {exc}"
            ) from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(rgb, dtype=np.float32)  # (H, W, 3) in [0, 255]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)) / 127.5 - 1.0


def decode_images(blobs: Sequence[bytes], size: int, settings: ServingSettings) -> np.ndarray:
    """(B, 3, size, size) pixels of a request's images. Every header is read, and the request's
    pixels counted against `inference_max_request_pixels`, before any image is decoded. Blocks
    for up to seconds: run it in a thread (`InferenceService.decode`)."""
    check_count(len(blobs), settings)
    images: list[Image.Image] = []
    try:
        for i, blob in enumerate(blobs):
            images.append(_open(blob, i, settings))
        total = sum(image.size[0] * image.size[1] for image in images)
        budget = settings.inference_max_request_pixels
        if total > budget:
            raise ApiError(
                413,
                "payload_too_large",
                f"the request's {len(images)} images hold {total / 1e6:.1f} MP together; at "
                f"most {budget / 1e6:.1f} MP per request: send fewer or smaller images (the "
                f"model reads {size}×{size})",
            )
        return np.stack([_pixels(image, size, i) for i, image in enumerate(images)])
    finally:
        for image in images:
            image.close()
