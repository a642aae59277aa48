"""The report page in real headless Chromium: every image and plot drawn, no console errors."""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .headless_chromium import check_page, chromium_path

ARTIFACTS = Path(
    os.environ.get("VLARENA_TEST_ARTIFACTS", Path(__file__).parents[2] / "build" / "test-artifacts")
)

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="needs chromium (Debian package)")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served_report(tiny_compare):
    """The compare job's directory over HTTP on a free local port."""
    handler = functools.partial(QuietHandler, directory=str(tiny_compare["workdir"]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/report/report.html"
    server.shutdown()
    server.server_close()


def test_report_page_draws_every_image_and_plot_without_console_errors(served_report):
    shot = ARTIFACTS / "report-page.png"
    page = check_page(served_report, shot)
    assert page.title.endswith("vlarena report")
    assert len(page.images) >= 8
    for img in page.images:
        assert img["naturalWidth"] > 0, f"image {img['alt']!r} did not load"
        assert img["distinctColours"] > 2, f"image {img['alt']!r} is uniform"
    assert len(page.plots) >= 6
    for plot in page.plots:
        assert plot["drawn"] and plot["traces"] > 0, f"plot {plot['id']} did not draw"
    assert page.console_errors == []
    assert shot.stat().st_size > 50_000
