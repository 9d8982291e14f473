"""Kernel Inception Distance (Bińkowski et al., 2018) between two sets of feature vectors.

KID is the squared maximum mean discrepancy with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1) ** 3``,
estimated without bias on random subsets and averaged (as torchmetrics and clean-fid do). Unlike FID it is
unbiased for small sets, which suits a benchmark of a few hundred images; 0 means the two sets are drawn from the
same distribution (the estimate can dip slightly below 0). ``bench model`` uses the attribute judge's features
in place of Inception's: the judge was trained on real composites only, so its features describe this domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Kid:
    """Mean and standard deviation of the subset estimates."""

    mean: float
    std: float
    subsets: int
    subset_size: int


def _mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of equal-sized ``x`` and ``y`` under the cubic polynomial kernel."""
    n, dim = x.shape
    kxx = (x @ x.T / dim + 1.0) ** 3
    kyy = (y @ y.T / dim + 1.0) ** 3
    kxy = (x @ y.T / dim + 1.0) ** 3
    off = n * (n - 1)
    return float((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2.0 * kxy.mean())


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 50, subset_size: int = 100, seed: int = 0) -> Kid:
    """KID between ``real`` and ``fake`` features (rows are samples); subsets shrink to the smaller set."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"KID needs two (N, D) arrays of one width, got {real.shape} and {fake.shape}")
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError("KID needs at least two samples in each set")
    rng = np.random.default_rng(seed)
    real64, fake64 = real.astype(np.float64), fake.astype(np.float64)
    values = [_mmd2(real64[rng.choice(len(real), size, replace=False)],
                    fake64[rng.choice(len(fake), size, replace=False)]) for _ in range(subsets)]
    return Kid(float(np.mean(values)), float(np.std(values)), subsets, size)
