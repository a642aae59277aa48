"""Private redis-servers for tests: no persistence, a free port, stoppable."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from vlarena.serving.triton import free_port


@dataclass
class PrivateRedis:
    """A redis-server of a test's own, which it may stop and resume."""

    url: str
    process: subprocess.Popen

    def stall(self, seconds: float) -> None:
        """Stops Redis now (SIGSTOP: connections stay open, nothing answers) for `seconds`."""
        os.kill(self.process.pid, signal.SIGSTOP)
        threading.Timer(seconds, os.kill, (self.process.pid, signal.SIGCONT)).start()


@contextlib.contextmanager
def redis_server(directory: Path, *options: str) -> Iterator[PrivateRedis]:
    """A private redis-server (no persistence) on a free port, with extra `options`."""
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            *options,
        ],
        stdout=(directory / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                break
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    try:
        yield PrivateRedis(f"redis://127.0.0.1:{port}/0", process)
    finally:
        os.kill(process.pid, signal.SIGCONT)  # a stalled one ends too
        process.terminate()
        process.wait(10)
