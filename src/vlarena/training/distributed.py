"""Data-parallel set-up under torchrun (gloo on CPU, NCCL on GPUs) and device selection."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistContext:
    """Joins the process group that torchrun describes in the environment (a no-op alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when present (one device per local rank), else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device("cpu")


def torchrun_command(
    module_args: Sequence[str],
    *,
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: str | None = None,
    master: tuple[str, int] | None = None,
    executable: str | None = None,
) -> list[str]:
    """`torchrun ... -m vlarena.cli <module_args>`: one machine (standalone) or one of `nnodes`.

    Several nodes meet at `master` (host, port), where node rank 0 runs the store; `node_rank`
    may be a string the container runtime expands, e.g. `$(JOB_COMPLETION_INDEX)`.
    """
    if executable is None:
        beside = os.path.join(os.path.dirname(sys.executable), "torchrun")
        executable = beside if os.path.exists(beside) else shutil.which("torchrun") or "torchrun"
    command = [executable, "--nnodes", str(nnodes), "--nproc-per-node", str(nproc_per_node)]
    if nnodes == 1 and master is None:
        command.append("--standalone")
    else:
        if master is None or node_rank is None:
            raise ValueError("several nodes need a master address and a node rank")
        command += [
            "--node-rank",
            node_rank,
            "--master-addr",
            master[0],
            "--master-port",
            str(master[1]),
        ]
    return [*command, "-m", "vlarena.cli", *module_args]
