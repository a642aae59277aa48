"""The process-wide settings a run applies before it computes: torch's threads and device."""

from __future__ import annotations

import os

import torch

from vlarena.settings import get_settings
from vlarena.training.distributed import resolve_device


def configured_threads() -> int:
    """`VLARENA_NUM_THREADS` (0: the library's default)."""
    return get_settings().num_threads


def apply_thread_setting() -> None:
    """Sets torch's intra-op threads from `VLARENA_NUM_THREADS` when it is given."""
    if threads := configured_threads():
        torch.set_num_threads(threads)


def run_device() -> torch.device:
    """The device this process trains on (`VLARENA_DEVICE`, by local rank under torchrun)."""
    return resolve_device(get_settings().device, int(os.environ.get("LOCAL_RANK", 0)))
