"""Local residual correction of CIFM's in-painting (regression kriging on the model's masked-cell errors).

CIFM trained by (balanced) MSE predicts a conditional mean: its imputed cells spread far less than real ones and
sit where the slide's average pulls them. The measured cells around the targets show the model's error directly.
For a measured cell ``j`` the **residual** is its log-normalised profile minus CIFM's reconstruction of ``j``
*masked* (the in-painting task itself; the targets stay masked too)::

    r_j = log1p(1e4 x_j / L_j) - f(graph with j and the targets removed)_j

To mask about the training share of cells at once, the cells whose residuals are needed are split at random
into ``ceil(1 / mask_ratio)`` groups, one reconstruction pass each. A target's **correction** is the mean
residual of its ``k`` nearest measured cells of its section (``CifmConfig.k``), added to its reconstruction in
log space (floored at 0). Off by default (``CifmConfig.residual``); docs/cifm.md gives what it does on the
benchmark. This mirrors SQuINT's correction (:mod:`napari_squint.api.squint_residual`), which uses
microenvironments decoded from observed tokens instead.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

__all__ = ["local_correction", "masked_residuals", "nearest_measured"]


def nearest_measured(coords: np.ndarray, section: np.ndarray, measured: np.ndarray, query_xy: np.ndarray,
                     query_section: np.ndarray, k: int) -> np.ndarray:
    """``(t, k)`` the ``k`` nearest ``measured`` cells (indices into ``coords``) of each query point, among the cells
    of the point's own section (``section`` (n,) and ``query_section`` (t,) hold comparable labels); -1 pads where a
    section holds fewer than ``k``. ``measured`` is (n,) bool."""
    query_xy = np.asarray(query_xy, dtype=np.float64)
    query_section = np.asarray(query_section)
    out = np.full((query_xy.shape[0], k), -1, dtype=np.int64)
    for s in np.unique(query_section):
        rows = np.flatnonzero(query_section == s)
        pool = np.flatnonzero(measured & (section == s))
        if pool.size == 0:
            continue
        kk = min(k, pool.size)
        _, nn = cKDTree(coords[pool]).query(query_xy[rows], k=kk)
        out[rows, :kk] = pool[np.asarray(nn).reshape(rows.size, kk)]
    return out


def local_correction(near: np.ndarray, residual_of, n_genes: int) -> np.ndarray:
    """``(t, n_genes)`` mean residual of each row's cells in ``near`` (-1 pads ignored; zeros for a row with none);
    ``residual_of(cells) -> (len(cells), n_genes)`` gives the residuals of the distinct cells needed, once each."""
    valid = near >= 0
    need = np.unique(near[valid])
    if need.size == 0:
        return np.zeros((near.shape[0], n_genes))
    res = residual_of(need)
    pos = np.searchsorted(need, np.maximum(near, 0))
    total = (res[pos] * valid[..., None]).sum(1)
    return total / np.maximum(valid.sum(1), 1)[:, None]


def masked_residuals(reconstruct, x_in, masked: np.ndarray, cells: np.ndarray, mask_ratio: float,
                     seed: int = 0) -> np.ndarray:
    """``(m, g)`` residuals of the measured ``cells``: log-normalised input minus the reconstruction of each cell
    with it (and every ``masked`` cell) removed.

    ``reconstruct(masked, rows) -> (len(rows), g)`` decodes ``rows`` with ``masked`` (n,) removed; ``x_in`` (n, g)
    is the log-normalised input (dense or CSR). The cells are masked in ``ceil(1 / mask_ratio)`` disjoint random
    groups, one pass each.
    """
    cells = np.asarray(cells, dtype=np.int64)
    passes = max(1, math.ceil(1.0 / mask_ratio))
    group = np.random.default_rng(seed).integers(0, passes, cells.size)
    out = np.zeros((cells.size, x_in.shape[1]))
    for p in range(passes):
        sel = np.flatnonzero(group == p)
        if sel.size == 0:
            continue
        m = np.asarray(masked, dtype=bool).copy()
        m[cells[sel]] = True
        rows = x_in[cells[sel]]
        measured = rows.toarray() if sp.issparse(rows) else np.asarray(rows)
        out[sel] = measured - reconstruct(m, cells[sel])
    return out
