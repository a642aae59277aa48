"""What the measured throughput and latency cost at scale: training samples and requests per day
turned into node-hours and money, with node prices as inputs (defaults documented below)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from vlarena.errors import UserInputError

# Scales the cost section reports: training samples, and requests per day.
TRAINING_SAMPLES = (1e6, 1e8, 1e10)
REQUESTS_PER_DAY = (1e4, 1e6, 1e8)


@dataclass(frozen=True)
class NodeType:
    """A node one can rent: its hourly price and what it holds.

    Measured throughput converts to a node of the same device kind (a CPU node scales it by
    its vCPUs over the threads measured: data-parallel replicas, linear scaling assumed; a GPU
    node by its GPUs, each like the one measured). A node of another kind needs
    `relative_throughput` (its speed against the measured machine), else its cost is left
    out rather than guessed.
    """

    name: str
    device: str  # "cpu" or "cuda"
    usd_per_hour: float
    vcpus: int = 0
    gpus: int = 0
    source: str = ""
    relative_throughput: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeType:
        camel = {"usdPerHour": "usd_per_hour", "relativeThroughput": "relative_throughput"}
        known = {f.name for f in fields(cls)}
        values = {camel.get(k, k): v for k, v in data.items()}
        unknown = set(values) - known
        if unknown:
            raise UserInputError(
                f"node price: unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        node = cls(**values)
        if node.device not in ("cpu", "cuda"):
            raise UserInputError(
                f"node {node.name}: device must be 'cpu' or 'cuda', got {node.device!r}"
            )
        if node.usd_per_hour <= 0:
            raise UserInputError(f"node {node.name}: usd_per_hour must be positive")
        return node

    def capacity(self, measured: Mapping[str, Any]) -> float | None:
        """This node's throughput as a multiple of the measured machine's, or None."""
        if self.relative_throughput is not None:
            return self.relative_throughput
        if self.device != measured.get("device"):
            return None
        if self.device == "cpu":
            return self.vcpus / max(1, int(measured.get("threads") or 1)) if self.vcpus else None
        return float(self.gpus or 1)


# On-demand list prices (Linux, us-east-1) as the AWS EC2 pricing page gave them in 2025.
# They are inputs, not facts about your cloud: pass your own (`--node-prices`).
DEFAULT_NODES = (
    NodeType(
        "cpu-8vcpu",
        "cpu",
        0.357,
        vcpus=8,
        source="AWS EC2 c7i.2xlarge (8 vCPU, 16 GiB), on-demand, us-east-1, 2025 list price",
    ),
    NodeType(
        "gpu-1xA10G",
        "cuda",
        1.006,
        vcpus=4,
        gpus=1,
        source="AWS EC2 g5.xlarge (1× NVIDIA A10G 24 GB), on-demand, us-east-1, 2025 list price",
    ),
)


def cost_section(
    throughput: Mapping[str, float],
    latency_ms: Mapping[str, Mapping[str, float]],
    measured: Mapping[str, Any],
    nodes: Iterable[NodeType] = DEFAULT_NODES,
) -> dict[str, Any]:
    """Training and serving cost per family and node.

    `throughput`: training samples/s per family; `latency_ms`: per family, milliseconds per
    request at batch 1 by request kind ("caption", "classify", ...); `measured`: the machine
    that measured them ({"device", "threads"}).
    """
    nodes = list(nodes)
    training, serving = [], []
    for node in nodes:
        cap = node.capacity(measured)
        for family, sps in throughput.items():
            row: dict[str, Any] = {"family": family, "node": node.name, "scales": []}
            for samples in TRAINING_SAMPLES:
                hours = None if cap is None or not sps else samples / (sps * cap) / 3600
                row["scales"].append(
                    {
                        "samples": samples,
                        "nodeHours": hours,
                        "usd": None if hours is None else hours * node.usd_per_hour,
                    }
                )
            training.append(row)
        for family, kinds in latency_ms.items():
            for kind, ms in kinds.items():
                if not isinstance(ms, int | float) or ms <= 0:
                    continue
                hours_per_request = None if cap is None else ms / 1000 / 3600 / cap
                row = {
                    "family": family,
                    "node": node.name,
                    "request": kind,
                    "msPerRequest": ms,
                    "usdPerMillion": None
                    if hours_per_request is None
                    else 1e6 * hours_per_request * node.usd_per_hour,
                    "scales": [],
                }
                for per_day in REQUESTS_PER_DAY:
                    hours = None if hours_per_request is None else per_day * hours_per_request
                    row["scales"].append(
                        {
                            "requestsPerDay": per_day,
                            "nodeHoursPerDay": hours,
                            "nodes": None if hours is None else max(1, math.ceil(hours / 24)),
                            "usdPerDay": None if hours is None else hours * node.usd_per_hour,
                        }
                    )
                serving.append(row)
    return {
        "measuredOn": dict(measured),
        "nodes": [{**asdict(n), "capacity": n.capacity(measured)} for n in nodes],
        "assumptions": [
            "Training: node-hours = samples ÷ (measured samples/s × node capacity).",
            "Serving: one request at a time per measured machine (batch 1, no batching gains); "
            "node-hours per day = requests × measured latency ÷ node capacity. The X-encoder "
            "is shared by both families and not included.",
            "Node capacity: vCPUs ÷ threads measured for CPU nodes (linear scaling), GPUs for "
            "GPU nodes when measured on a GPU; a node of another kind than the measured machine "
            "is priced only with a given relative throughput.",
            "Prices are hourly on-demand list prices given as inputs; nodes needed assumes "
            "24 h use per node.",
        ],
        "training": training,
        "serving": serving,
    }
