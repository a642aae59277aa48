"""The chaos suite's pytest set-up: the `chaos` marker (the full runs, `make chaos`, skipped
unless VLARENA_CHAOS=full) and the `chaos:` lines of every run in the terminal summary."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

_LINES: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: a full chaos run (`make chaos`); skipped unless VLARENA_CHAOS=full"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("VLARENA_CHAOS") == "full":
        return
    skip = pytest.mark.skip(reason="a full chaos run: `make chaos` (VLARENA_CHAOS=full)")
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.add_marker(skip)


@pytest.fixture
def chaos_lines() -> Iterator[list[str]]:
    """Where a test puts its run's `chaos:` line, shown in the terminal summary."""
    yield _LINES


@pytest.fixture
def chaos_root(tmp_path: Path) -> Path:
    root = tmp_path / "chaos"
    root.mkdir()
    return root


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _LINES:
        terminalreporter.section("chaos")
        for line in _LINES:
            terminalreporter.write_line(line)
