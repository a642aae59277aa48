"""An asyncio event loop on its own thread, so synchronous worker code can use the async store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """Runs coroutines on a private loop thread and waits for their results from any thread."""

    def __init__(self, name: str = "vlarena-store") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Runs `coroutine` on the loop; raises what it raises, or TimeoutError.

        A coroutine still running at the timeout is cancelled, so that a stalled Redis leaves no
        command waiting on the loop (the client drops the connection it was using).
        """
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
