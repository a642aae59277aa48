"""Counting the floating-point operations of a computation, and model FLOP utilisation.

One home for FLOP counts: training cost per stage, inference cost per item and the benchmarks'
MFU all count with `torch.utils.flop_counter`, which counts matrix products and convolutions
(2 FLOPs per multiply-add) and leaves out element-wise work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")


def count_flops(fn: Callable[[], T]) -> tuple[T, int]:
    """Runs `fn()` once and returns its result and the FLOPs it ran (forward and backward
    alike, when `fn` runs a backward pass)."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, int(counter.get_total_flops())


def utilisation(flops_per_item: float, items_per_second: float, peak: float) -> float:
    """Model FLOP utilisation: the FLOP/s achieved (FLOPs per item × items per second) as a
    fraction of the machine's peak FLOP/s."""
    if items_per_second < 0 or peak <= 0:
        raise ValueError("the rate must not be negative and the peak must be positive")
    return flops_per_item * items_per_second / peak
