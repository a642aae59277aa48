"""PCA and t-SNE in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from vlarena.evaluation.report.projection import pca, tsne


def test_pca_finds_the_axes_of_largest_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)) * np.array([5.0, 2.0, 0.1, 0.1, 0.1])
    flat, explained = pca(x)
    assert flat.shape == (300, 2)
    assert explained[0] > explained[1] > 0.1
    assert abs(np.corrcoef(flat[:, 0], x[:, 0])[0, 1]) > 0.99
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-9)
    again, _ = pca(x * 1.0)
    np.testing.assert_allclose(flat, again)  # signs fixed: the same picture every time


def test_tsne_keeps_separate_clusters_apart():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(3, 10))[labels] * 4 + rng.normal(size=(60, 10))
    y = tsne(x, iterations=500, seed=0)
    d = ((y[:, None] - y[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = d.argsort(1)[:, :5]
    assert (labels[nearest] == labels[:, None]).mean() > 0.95
    np.testing.assert_allclose(y, tsne(x, iterations=500, seed=0))


def test_tsne_needs_a_few_points():
    with pytest.raises(ValueError):
        tsne(np.zeros((3, 2)))
