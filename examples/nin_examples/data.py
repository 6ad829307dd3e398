"""Data of one's own, as four arrays: a dataset factory for nin (`dataset.target=nin_examples.data:blobs`)."""

from __future__ import annotations

import numpy as np


def blobs(n_train: int = 2000, n_test: int = 500, dim: int = 20, classes: int = 4, spread: float = 1.5, seed: int = 0):
    """Gaussian blobs: `classes` clusters in `dim` dimensions, integer labels (x_train, y_train, x_test, y_test)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, size=(classes, dim))

    def draw(n: int):
        y = rng.integers(0, classes, size=n)
        return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y.astype(np.int64)

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return x_train, y_train, x_test, y_test
