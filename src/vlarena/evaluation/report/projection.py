"""2-D maps of embeddings: PCA and exact t-SNE, in numpy.

The report maps a few hundred points, where exact t-SNE (O(n²) per iteration) takes seconds;
writing it here keeps the platform free of a scikit-learn dependency for one figure.
"""

from __future__ import annotations

import numpy as np

MACHINE_EPSILON = np.finfo(np.float64).eps


def pca(x: np.ndarray, dims: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Projection of the rows of `x` (N, D) on their `dims` principal axes, and the share of
    variance each axis explains. Axes are signed so that each one's largest loading is positive
    (the same data always gives the same picture)."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt[:dims]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    vt = vt * signs[:, None]
    variance = s**2
    explained = variance[:dims] / variance.sum() if variance.sum() > 0 else np.zeros(dims)
    return centred @ vt.T, explained


def _conditional_probabilities(
    sq_dist: np.ndarray, perplexity: float, tol: float = 1e-5, steps: int = 100
) -> np.ndarray:
    """P(j|i) with a per-row Gaussian bandwidth found by bisection on its entropy."""
    n = len(sq_dist)
    target = np.log(perplexity)
    p = np.zeros((n, n))
    for i in range(n):
        d = np.delete(sq_dist[i], i)
        beta, lo, hi = 1.0, 0.0, np.inf
        for _ in range(steps):
            w = np.exp(-(d - d.min()) * beta)
            total = w.sum()
            entropy = np.log(total) + beta * ((d - d.min()) * w).sum() / total
            if abs(entropy - target) < tol:
                break
            if entropy > target:  # too flat: narrow the kernel
                lo = beta
                beta = beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi = beta
                beta = (beta + lo) / 2
        p[i, np.arange(n) != i] = w / total
    return p


def tsne(
    x: np.ndarray,
    *,
    perplexity: float = 30.0,
    iterations: int = 750,
    seed: int = 0,
) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton, 2008) of the rows of `x` into 2-D.

    The usual recipe: perplexity-calibrated Gaussian affinities, early exaggeration (×12 for
    the first 250 iterations), momentum 0.5 then 0.8, per-parameter gains, a learning rate of
    max(N / 48, 50), and a PCA start scaled to a small spread (deterministic for a seed).
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    perplexity = min(perplexity, (n - 1) / 3)
    sq = (x**2).sum(1)
    sq_dist = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    p = _conditional_probabilities(sq_dist, perplexity)
    p = np.maximum((p + p.T) / (2 * n), MACHINE_EPSILON)

    start, _ = pca(x, 2)
    rng = np.random.default_rng(seed)
    y = start / (start[:, 0].std() or 1.0) * 1e-4 + rng.normal(0, 1e-6, start.shape)
    update = np.zeros_like(y)
    gains = np.ones_like(y)
    rate = max(n / 48, 50.0)
    for it in range(iterations):
        exaggeration = 12.0 if it < 250 else 1.0
        momentum = 0.5 if it < 250 else 0.8
        ysq = (y**2).sum(1)
        num = 1.0 / (1.0 + np.maximum(ysq[:, None] + ysq[None, :] - 2 * y @ y.T, 0.0))
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), MACHINE_EPSILON)
        pq = (exaggeration * p - q) * num  # (N, N)
        grad = 4 * (pq.sum(1)[:, None] * y - pq @ y)
        same = np.sign(grad) == np.sign(update)
        gains = np.where(same, gains * 0.8, gains + 0.2).clip(0.01)
        update = momentum * update - rate * gains * grad
        y = y + update
        y = y - y.mean(0)
    return y
