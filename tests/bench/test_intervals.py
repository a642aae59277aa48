"""The median intervals every benchmark prints cover the true median as often as they say."""

from __future__ import annotations

import numpy as np
import pytest

from vlarena.evaluation.statistics import median_interval


def test_order_statistic_interval_covers_the_median_as_stated():
    rng = np.random.default_rng(0)
    true_median = np.log(2)  # of the unit exponential: a skewed distribution
    for n in (7, 12, 30):
        hits, coverage = 0, None
        for _ in range(2000):
            iv = median_interval(rng.exponential(size=n))
            hits += iv.low <= true_median <= iv.high
            coverage = iv.coverage
        assert coverage is not None and coverage >= 0.95
        # the observed rate matches the stated coverage within binomial noise (~4 SE)
        se = np.sqrt(coverage * (1 - coverage) / 2000)
        assert abs(hits / 2000 - coverage) <= 4 * se + 1e-9, (n, hits, coverage)


def test_few_samples_give_the_range_with_its_own_coverage():
    iv = median_interval([3.0, 1.0, 2.0])
    assert (iv.median, iv.low, iv.high) == (2.0, 1.0, 3.0)
    assert iv.coverage == pytest.approx(0.75)
    assert "n=3" in iv.describe()
    with pytest.raises(ValueError):
        median_interval([])


def test_a_benchmark_waits_for_the_load_left_by_what_ran_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vlarena.bench import limits

    loads = iter([2.0, 1.2, 0.4, 0.1])
    monkeypatch.setattr(limits.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    slept: list[float] = []
    assert limits.quiet_load(60, sleep=slept.append) == 0.4
    assert slept == [5.0, 5.0]
    # No wait: the load as it is, busy or not.
    monkeypatch.setattr(limits.os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    assert limits.quiet_load(0, sleep=slept.append) == 3.0 and len(slept) == 2
