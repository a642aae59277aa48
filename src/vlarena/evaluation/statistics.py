"""Intervals: medians of repeated measurements (distribution-free), the difference between two
families scored on the same items, and one family's mean (resampled over items and seeds)."""

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


@dataclass(frozen=True)
class PairedDifference:
    """Family a's metric minus family b's, over the same test items, with intervals.

    `low95`/`high95` is the 95% interval; `low`/`high` the interval at `confidence`, the level
    a decision uses (95% corrected for how many decisions are made together).
    """

    a: str
    b: str
    difference: float
    low95: float
    high95: float
    low: float
    high: float
    confidence: float
    seeds: tuple[int, int]
    items: int
    # The share of the interval's variance that comes from seeds (the rest: test items).
    seed_share: float

    def as_dict(self) -> dict[str, object]:
        return {
            "families": [self.a, self.b],
            "difference": self.difference,
            "interval95": [self.low95, self.high95],
            "interval": [self.low, self.high],
            "confidence": self.confidence,
            "seeds": list(self.seeds),
            "items": self.items,
            "seedShare": self.seed_share,
        }


REPLICATES = 2000


def _seed_replicates(scores: np.ndarray, seed_draws: np.ndarray) -> np.ndarray:
    """Bootstrap means of one family over redrawn seeds (R, S); a bootstrap of S seeds spreads
    (S - 1)/S as much as the seeds do, so the deviation is scaled back by sqrt(S / (S - 1))."""
    per_seed = scores.mean(1)  # (S,)
    s = len(per_seed)
    if s == 1:
        return np.zeros(len(seed_draws))
    return np.sqrt(s / (s - 1)) * (per_seed[seed_draws].mean(1) - per_seed.mean())


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    names: tuple[str, str] = ("a", "b"),
    confidence: float = 0.95,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> PairedDifference:
    """mean(a) - mean(b) for per-item scores a (S_a, n) and b (S_b, n) of the same n items.

    Paired resampling: the n items are redrawn with the same draw for both families (an item
    hard for one is hard for the other), and each family's seeds are redrawn on their own. The
    two parts' variances add; the interval is the difference ± a t quantile times their root,
    with Welch–Satterthwaite degrees of freedom (n - 1 for the items, S - 1 per family's seeds),
    so that 3 seeds, whose spread is itself uncertain, widen it as they should.
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"the families were scored on different items: {a.shape[1]} vs {b.shape[1]}"
        )
    n = a.shape[1]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1 / n), size=replicates) / n  # (R, n)
    per_item = a.mean(0) - b.mean(0)
    parts = [(float((weights @ per_item).var(ddof=1)), n - 1)]
    for scores in (a, b):
        s = scores.shape[0]
        if s > 1:
            draws = rng.integers(0, s, size=(replicates, s))
            # Seeds' means also differ by each item's own seed-to-seed noise, which the items'
            # part already holds: what remains is the seeds' own share (random-effects ANOVA).
            within = float(scores.var(0, ddof=1).mean()) / (n * s)
            between = float(_seed_replicates(scores, draws).var(ddof=1))
            parts.append((max(between - within, 0.0), s - 1))
    variance = sum(v for v, _ in parts)
    df = variance**2 / sum(v**2 / d for v, d in parts if v > 0) if variance > 0 else float(n - 1)
    diff = float(a.mean() - b.mean())
    se = np.sqrt(variance)

    def interval(level: float) -> tuple[float, float]:
        half = float(stats.t.ppf(0.5 + level / 2, df)) * se
        return diff - half, diff + half

    (low95, high95), (low, high) = interval(0.95), interval(confidence)
    return PairedDifference(
        a=names[0],
        b=names[1],
        difference=diff,
        low95=low95,
        high95=high95,
        low=low,
        high=high,
        confidence=confidence,
        seeds=(a.shape[0], b.shape[0]),
        items=n,
        seed_share=0.0 if variance == 0 else 1 - parts[0][0] / variance,
    )


def mean_interval(
    scores: np.ndarray,
    confidence: float = 0.95,
    seed: int = 0,
    bounds: tuple[float, float] = (-np.inf, np.inf),
) -> tuple[float, float, float]:
    """The mean of one family's per-item scores (seeds, items) and its interval, resampled over
    items and seeds as `paired_difference` does (against a constant). The interval is cut to
    `bounds`, the values the metric can take: with few seeds that spread widely, mean ± a t
    quantile can pass them (an accuracy's above 100%), and the mean itself cannot."""
    scores = np.atleast_2d(np.asarray(scores, float))
    d = paired_difference(scores, np.zeros((1, scores.shape[1])), confidence=confidence, seed=seed)
    low, high = bounds
    return d.difference, max(d.low, low), min(d.high, high)
