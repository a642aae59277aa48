"""Opens a page in real headless Chromium (the Debian package) over the DevTools protocol and
reports what a person would see: images drawn, plots drawn, console errors; saves a screenshot.

Driven through the protocol directly (a websocket, from the `websockets` package uvicorn
already brings), so the check needs no chromedriver and no browser download.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")

# For every <img>: its natural size and whether its pixels vary; for every Plotly plot:
# whether it drew traces into its SVG.
INSPECT = """
(() => {
  const images = Array.from(document.images).map((img) => {
    let distinct = 0;
    if (img.complete && img.naturalWidth > 0) {
      const c = document.createElement('canvas');
      c.width = Math.min(img.naturalWidth, 256); c.height = Math.min(img.naturalHeight, 256);
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0, c.width, c.height);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      for (let i = 0; i < d.length && seen.size < 64; i += 4 * 7) seen.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]);
      distinct = seen.size;
    }
    return {alt: img.alt, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight, distinctColours: distinct};
  });
  const plots = Array.from(document.querySelectorAll('.plot')).map((div) => ({
    id: div.id,
    drawn: div.classList.contains('js-plotly-plot') && !!div.querySelector('svg.main-svg'),
    traces: div.querySelectorAll('g.trace, g.hm, g.imagelayer image').length,
  }));
  return {images, plots, title: document.title};
})()
"""


@dataclass
class PageCheck:
    images: list[dict[str, Any]]
    plots: list[dict[str, Any]]
    console_errors: list[str] = field(default_factory=list)
    title: str = ""


def chromium_path() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


class _DevTools:
    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> None:
        if any(e.get("method") == method for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(event)
            if event.get("method") == method:
                return
        raise TimeoutError(f"no {method} within {timeout} s")

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


def _console_errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for e in events:
        params = e.get("params", {})
        if e.get("method") == "Runtime.exceptionThrown":
            errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif e.get("method") == "Runtime.consoleAPICalled" and params.get("type") in (
            "error",
            "assert",
        ):
            errors.append(
                " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
                )
            )
        elif (
            e.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error"
        ):
            entry = params["entry"]
            errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
    return errors


def check_page(url: str, screenshot: Path, *, width: int = 1280, timeout: float = 90) -> PageCheck:
    """Loads `url`, waits until every plot has drawn (or `timeout`), inspects the page and
    writes a full-page PNG screenshot to `screenshot`."""
    binary = chromium_path()
    if not binary:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    profile = Path(tempfile.mkdtemp(prefix="vlarena-chromium-"))
    proc = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={width},900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tools = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        page = next(t for t in targets if t["type"] == "page")
        tools = _DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Runtime", "Log", "Page"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=url)
        tools.wait_for("Page.loadEventFired", timeout)
        deadline = time.monotonic() + timeout
        inspected = tools.evaluate(INSPECT)
        while not all(p["drawn"] for p in inspected["plots"]) and time.monotonic() < deadline:
            time.sleep(0.25)
            inspected = tools.evaluate(INSPECT)
        metrics = tools.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = tools.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": min(size["height"], 16000), "scale": 1},
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return PageCheck(
            images=inspected["images"],
            plots=inspected["plots"],
            console_errors=_console_errors(tools.events),
            title=inspected["title"],
        )
    finally:
        if tools:
            tools.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
