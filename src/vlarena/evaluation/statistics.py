"""Intervals for figures measured several times: medians with distribution-free intervals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A median and an interval around it that covers the true median with `coverage`."""

    median: float
    low: float
    high: float
    coverage: float
    n: int

    def describe(self, fmt: str = "{:.3g}") -> str:
        return (
            f"{fmt.format(self.median)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"
            f" ({self.coverage:.0%}, n={self.n})"
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "median": self.median,
            "low": self.low,
            "high": self.high,
            "coverage": self.coverage,
            "n": self.n,
        }


def median_interval(samples: Sequence[float], confidence: float = 0.95) -> Interval:
    """The median of `samples` and the order-statistic interval for it.

    Between the k-th smallest and the k-th largest of n independent samples lies the true
    median with probability 1 - 2 P(Binomial(n, 1/2) < k), whatever their distribution; k is
    the largest with at least `confidence`. Fewer than 6 samples cannot reach 95%: the interval
    is then the whole range, with the coverage it has (1 - 2^(1-n)).
    """
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n == 0:
        raise ValueError("no samples")
    k, coverage = 1, 1 - 2 * 0.5**n
    for j in range(1, n // 2 + 1):
        c = 1 - 2 * float(stats.binom.cdf(j - 1, n, 0.5))
        if c < confidence:
            break
        k, coverage = j, c
    return Interval(float(np.median(x)), float(x[k - 1]), float(x[n - k]), coverage, n)
