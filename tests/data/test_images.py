"""Image loading: colour modes, transparency, resizing, errors, and cached URL downloads."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlarena.data import ImageError, load_image, load_images


def test_rgb_image_becomes_3_size_size_float32_in_minus_one_to_one(red_png):
    image = load_image(str(red_png), 8)
    assert image.shape == (3, 8, 8)
    assert image.dtype == np.float32
    np.testing.assert_allclose(image[:, 3, 3], [1.0, -1.0, -1.0])


def test_transparent_pixels_are_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    rgba.save(tmp_path / "rgba.png")
    image = load_image(str(tmp_path / "rgba.png"), 2)
    np.testing.assert_allclose(image[:, 0, 0], [1, 1, 1])
    # Bilinear upscaling to 2x2 keeps the opaque column blue at its centre row.
    assert image[2, 0, 1] == 1.0 and image[0, 0, 1] < 0


def test_palette_transparency_like_the_emoji_pngs_is_composited_on_white(tmp_path):
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(tmp_path / "p.png", transparency=0)
    image = load_image(str(tmp_path / "p.png"), 4)
    np.testing.assert_allclose(image[:, 3, 3], [1, 1, 1])
    np.testing.assert_allclose(image[:, 0, 0], np.array([200, 30, 30]) / 127.5 - 1, rtol=1e-6)


def test_greyscale_is_copied_to_three_channels(tmp_path):
    Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16).save(tmp_path / "g.png")
    image = load_image(str(tmp_path / "g.png"), 4)
    np.testing.assert_array_equal(image[0], image[1])
    np.testing.assert_array_equal(image[0], image[2])
    assert image[0, 0, 0] == -1.0


def test_load_images_stacks_a_batch(red_png):
    batch = load_images([str(red_png)] * 3, 5)
    assert batch.shape == (3, 3, 5, 5)
    assert load_images([], 5).shape == (0, 3, 5, 5)


def test_a_missing_or_corrupt_file_raises_image_error_naming_it(tmp_path):
    with pytest.raises(ImageError, match=r"absent\.png: file not found"):
        load_image(str(tmp_path / "absent.png"), 4)
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match=r"text\.png: cannot decode"):
        load_image(str(tmp_path / "text.png"), 4)


@pytest.fixture
def image_server(red_png: Path) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server serving red.png; yields its base URL and the paths requested."""
    requested: list[str] = []
    body = red_png.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            if self.path != "/red.png":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_image_is_downloaded_once_into_the_cache(image_server, isolated_cache):
    base, requested = image_server
    first = load_image(f"{base}/red.png", 4)
    second = load_image(f"{base}/red.png", 4)
    np.testing.assert_array_equal(first, second)
    assert requested == ["/red.png"]
    assert [path.suffix for path in (isolated_cache / "images").iterdir()] == [".png"]


def test_a_failed_download_raises_image_error_naming_the_url(image_server, isolated_cache):
    base, _ = image_server
    with pytest.raises(ImageError, match=r"/absent\.png: download failed"):
        load_image(f"{base}/absent.png", 4)
    assert not any((isolated_cache / "images").iterdir())


def damaged_pngs(count: int) -> Iterator[bytes]:
    """A small PNG with a few bytes changed or its tail cut off, `count` ways (fixed seed)."""
    import io
    import random

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, "PNG")
    good = buffer.getvalue()
    rng = random.Random(0)
    for _ in range(count):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(8, len(data))]
        yield bytes(data)


def test_a_damaged_png_is_an_image_error_whatever_the_damage(tmp_path):
    path = tmp_path / "damaged.png"
    for data in damaged_pngs(3000):
        path.write_bytes(data)
        try:
            load_image(str(path), 4)
        except ImageError as err:
            assert "damaged.png" in str(err)


def test_the_gateway_answers_a_damaged_png_with_415_not_a_server_error():
    from vlarena.gateway.errors import ApiError
    from vlarena.gateway.inference_images import decode_images
    from vlarena.serving.config import ServingSettings

    settings = ServingSettings()
    statuses = set()
    for data in damaged_pngs(3000):
        try:
            decode_images([data], 4, settings)
        except ApiError as err:
            statuses.add(err.status)
    assert statuses == {415}  # some damage decodes anyway; none escapes as another error
