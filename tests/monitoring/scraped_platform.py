"""The scraped test platform as the monitoring tests see it: Prometheus' address and what ran."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MODEL = "monitoring-model"


@dataclass
class ScrapedPlatform:
    prometheus: str
    started: float
    job: dict[str, Any]
    logs: Path
    caption_statuses: list[int]

    def query_range(self, expr: str, step: float = 1.0) -> dict[str, Any]:
        """Prometheus' answer to `expr` over the whole run, as Grafana asks for a panel."""
        response = httpx.get(
            f"{self.prometheus}/api/v1/query_range",
            params={"query": expr, "start": self.started, "end": time.time(), "step": step},
            timeout=30,
        )
        return response.json()

    def query(self, expr: str) -> dict[str, Any]:
        """Prometheus' answer to `expr` now."""
        return httpx.get(
            f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=30
        ).json()
