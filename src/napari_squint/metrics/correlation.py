"""Point-wise Pearson correlation between measured and imputed profiles.

Both functions expect profiles that are already on the comparison scale
(:func:`~napari_squint.metrics.log_normalise`); they do not normalise.

Undefined correlations are handled explicitly rather than left to produce
NaN or silently dropped:

* if the **measured** vector is constant there is nothing to correlate with,
  so that row (cell) or column (gene) is excluded from the average;
* if the measured vector varies but the **prediction** is constant (for
  example an all-zero predicted cell, or a baseline that predicts the same
  value for a gene everywhere) the prediction carries no pattern, so its
  correlation counts as ``0``. Dropping it instead would reward a method for
  collapsing.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["pearson_per_cell", "pearson_per_gene"]


def _as_pair(true, pred) -> tuple[np.ndarray, np.ndarray]:
    """Return ``true`` and ``pred`` as dense 2-D float64 arrays of equal shape."""
    arrays = []
    for name, value in (("true", true), ("pred", pred)):
        value = value.toarray() if sp.issparse(value) else np.asarray(value)
        value = value.astype(np.float64, copy=False)
        if value.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (cells, genes) array, got shape {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} contains NaN or infinite values")
        arrays.append(value)
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(
            f"true and pred must have the same shape, got {arrays[0].shape} and {arrays[1].shape}"
        )
    return arrays[0], arrays[1]


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``.

    Rows where ``a`` is constant give NaN; rows where only ``b`` is constant
    give 0. Constancy is tested exactly (``max == min``) so that rounding in
    the centring step can never turn a constant row into a spurious value.
    """
    r = np.full(a.shape[0], np.nan)
    if a.shape[1] == 0:
        return r
    a_const = np.ptp(a, axis=1) == 0
    b_const = np.ptp(b, axis=1) == 0
    ok = ~a_const & ~b_const
    ac = a[ok] - a[ok].mean(axis=1, keepdims=True)
    bc = b[ok] - b[ok].mean(axis=1, keepdims=True)
    num = np.einsum("ij,ij->i", ac, bc)
    den = np.sqrt(np.einsum("ij,ij->i", ac, ac) * np.einsum("ij,ij->i", bc, bc))
    r[ok] = np.clip(num / den, -1.0, 1.0)
    r[~a_const & b_const] = 0.0
    return r


def pearson_per_cell(true, pred, *, return_per_cell: bool = False):
    """Pearson correlation across genes for each cell, averaged over cells.

    This is the paper's PC: for every held-out cell (or microenvironment) the
    measured and imputed profiles are correlated across genes, and the
    correlations are averaged.

    Parameters
    ----------
    true
        ``(n_cells, n_genes)`` measured profiles, log-normalised. Dense or
        SciPy sparse.
    pred
        ``(n_cells, n_genes)`` imputed profiles on the same scale, rows in the
        same order as ``true``.
    return_per_cell
        If True, also return the per-cell correlations.

    Returns
    -------
    mean : float
        Mean correlation over the cells whose measured profile varies; NaN if
        no cell does.
    per_cell : numpy.ndarray, optional
        ``(n_cells,)`` correlations: NaN where the measured profile is
        constant (excluded from ``mean``), 0 where only the prediction is
        constant. Returned only when ``return_per_cell`` is True.

    Raises
    ------
    ValueError
        If the arrays are not 2-D, differ in shape or hold non-finite values.

    Examples
    --------
    >>> pearson_per_cell([[1, 2, 3], [1, 2, 3]], [[1, 2, 3], [3, 2, 1]])
    0.0
    """
    a, b = _as_pair(true, pred)
    r = _rowwise_pearson(a, b)
    mean = float(np.nanmean(r)) if np.any(~np.isnan(r)) else float("nan")
    return (mean, r) if return_per_cell else mean


def pearson_per_gene(true, pred, *, min_var: float = 0.0, return_per_gene: bool = False):
    """Pearson correlation across cells for each gene, averaged over genes.

    Stricter than :func:`pearson_per_cell`: a method must reproduce how each
    gene varies between the held-out cells, not only which genes are high in
    every cell (a constant mean profile scores well per cell but 0 here).

    Parameters
    ----------
    true
        ``(n_cells, n_genes)`` measured profiles, log-normalised.
    pred
        ``(n_cells, n_genes)`` imputed profiles on the same scale.
    min_var
        Genes are averaged only if their measured values vary across the
        cells and their (population) variance is greater than ``min_var``.
        The default keeps every gene that is not exactly constant; raise it
        to ignore genes detected in only a handful of cells.
    return_per_gene
        If True, also return the per-gene correlations.

    Returns
    -------
    mean : float
        Mean correlation over the retained genes; NaN if none is retained.
    per_gene : numpy.ndarray, optional
        ``(n_genes,)`` correlations: NaN for genes that were not retained,
        0 for retained genes whose prediction is constant. Returned only when
        ``return_per_gene`` is True.

    Raises
    ------
    ValueError
        If the arrays are not 2-D, differ in shape or hold non-finite values,
        or if ``min_var`` is negative.
    """
    if not min_var >= 0:
        raise ValueError(f"min_var must be >= 0, got {min_var!r}")
    a, b = _as_pair(true, pred)
    r = _rowwise_pearson(a.T, b.T)
    if a.shape[0]:
        r[a.var(axis=0) <= min_var] = np.nan
    mean = float(np.nanmean(r)) if np.any(~np.isnan(r)) else float("nan")
    return (mean, r) if return_per_gene else mean
