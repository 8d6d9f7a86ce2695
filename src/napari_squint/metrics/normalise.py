"""Log-normalisation of count profiles before they are compared.

Every metric in :mod:`napari_squint.metrics` compares profiles on the same
scale: counts normalised to ``target_sum`` per row, then ``log1p``. A row is a
cell when ``X`` is compared, and a whole microenvironment when ``X_nbr`` is
compared, so library size (and, for ``X_nbr``, the number of cells summed)
never dominates a score.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

__all__ = ["log_normalise"]


def log_normalise(counts, target_sum: float = 1e4) -> np.ndarray:
    """Normalise each row to ``target_sum`` counts, then apply ``log1p``.

    The work is done by scanpy (``sc.pp.normalize_total`` followed by
    ``sc.pp.log1p``) on a throw-away :class:`~anndata.AnnData` that wraps a
    *copy* of ``counts``, so the caller's array is never modified (scanpy
    normalises in place).

    Parameters
    ----------
    counts
        ``(n_rows, n_genes)`` non-negative counts, a NumPy array or any
        SciPy sparse matrix. Rows are cells (``X``) or microenvironments
        (``X_nbr``). Estimates from imputation methods need not be integers.
    target_sum
        Total that every non-empty row is scaled to before ``log1p``. The
        default, 10,000, is the conventional scanpy value; any fixed value
        gives the same Pearson correlations up to the ``log1p`` offset, but
        MMD and energy distance depend on it, so keep it fixed across the
        methods being compared.

    Returns
    -------
    numpy.ndarray
        Dense ``(n_rows, n_genes)`` ``float64`` array of
        ``log1p(counts / row_sum * target_sum)``.

    Raises
    ------
    ValueError
        If ``counts`` is not two-dimensional, holds NaN or infinite values, or
        holds negative values, or if ``target_sum`` is not positive.

    Notes
    -----
    Rows whose counts are all zero stay all zero (scanpy divides them by 1
    instead of 0), so no NaN is produced; scanpy's "Some cells have zero
    counts" warning is silenced because this case is handled on purpose. An
    all-zero predicted row is a genuine failure of the method that produced
    it and the metrics score it as such (see
    :func:`~napari_squint.metrics.pearson_per_cell`).

    Examples
    --------
    >>> log_normalise(np.array([[1.0, 3.0]]), target_sum=4.0)
    array([[0.69314718, 1.38629436]])
    """
    import anndata as ad
    import scanpy as sc

    if not np.isfinite(target_sum) or target_sum <= 0:
        raise ValueError(f"target_sum must be a positive number, got {target_sum!r}")
    if sp.issparse(counts):
        x = sp.csr_matrix(counts, dtype=np.float64, copy=True)
        values = x.data
    else:
        x = np.array(counts, dtype=np.float64, copy=True)
        values = x
    if x.ndim != 2:
        raise ValueError(f"counts must be a 2-D (rows, genes) array, got shape {x.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("counts contain NaN or infinite values")
    if values.size and values.min() < 0:
        raise ValueError("counts contain negative values; pass counts, not log or scaled data")
    if x.shape[0] == 0:
        return np.zeros(x.shape, dtype=np.float64)

    adata = ad.AnnData(X=x)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Some cells have zero counts")
        sc.pp.normalize_total(adata, target_sum=float(target_sum))
    sc.pp.log1p(adata)
    out = adata.X
    if sp.issparse(out):
        out = out.toarray()
    return np.asarray(out, dtype=np.float64)
