"""Relative-distance covariates C (paper section 4.2).

Each cell is described by an RBF expansion of the distances to its k nearest
neighbours. Distances are first divided by the section's median
nearest-neighbour distance, so C is the same whatever the coordinate unit
(micrometres, pixels, unknown).
"""

from __future__ import annotations

import numpy as np


def rbf_centres(n_rbf: int, max_dist: float) -> np.ndarray:
    """Evenly spaced RBF centres on [0, max_dist] (in median-NN units)."""
    if n_rbf < 1:
        raise ValueError(f"n_rbf={n_rbf} must be >= 1")
    return np.linspace(0.0, max_dist, n_rbf)


def rbf_covariates(
    dist: np.ndarray, scale: float, *, n_rbf: int = 16, max_dist: float = 4.0
) -> np.ndarray:
    """RBF expansion of relative neighbour distances.

    Parameters
    ----------
    dist
        (n, k) distances from each cell to its k nearest neighbours.
    scale
        The section's median nearest-neighbour distance (same unit as ``dist``).
    n_rbf, max_dist
        Number of Gaussian centres and the largest centre, in units of ``scale``.

    Returns
    -------
    (n, n_rbf) float32: for each centre, the mean over the k neighbours of
    ``exp(-(d/scale - mu)^2 / (2 w^2))`` with ``w`` the centre spacing; plus
    the result is unit-free.
    """
    if not scale > 0:
        raise ValueError(f"scale={scale} must be positive")
    mu = rbf_centres(n_rbf, max_dist)
    width = mu[1] - mu[0] if n_rbf > 1 else max_dist
    rel = dist / scale  # (n, k)
    phi = np.exp(-((rel[:, :, None] - mu[None, None, :]) ** 2) / (2 * width**2))
    return phi.mean(axis=1).astype(np.float32)
