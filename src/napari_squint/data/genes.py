"""Gene selection: all genes, an explicit list, or the top-N highly variable genes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from napari_squint.data.validate import SlideError


def select_genes(
    adata: AnnData,
    genes: int | str | Sequence[str] | None = "all",
    *,
    layer: str | None = None,
    batch_key: str | None = None,
) -> list[str]:
    """Choose the genes a model uses.

    Parameters
    ----------
    adata
        Slide with raw counts in ``X`` or ``layers[layer]``.
    genes
        ``"all"``/``None`` for every gene; an int N for the top-N highly
        variable genes computed by scanpy on counts (``flavor="seurat_v3"``,
        per batch when ``batch_key`` is given); or an explicit list of names.
    """
    if genes is None or (isinstance(genes, str) and genes == "all"):
        return adata.var_names.tolist()
    if isinstance(genes, str):
        try:
            genes = int(genes)
        except ValueError:
            raise SlideError(f"genes={genes!r}: expected 'all', an integer or a list of gene names") from None
    if isinstance(genes, (int, np.integer)):
        n = int(genes)
        if n <= 0:
            raise SlideError(f"genes={n}: the number of highly variable genes must be positive")
        if n > adata.n_vars:
            raise SlideError(f"genes={n}: the slide has only {adata.n_vars} genes (use 'all' for every gene)")
        if n == adata.n_vars:
            return adata.var_names.tolist()
        from napari_squint.data.validate import check_sparse_structure

        X = adata.X if layer is None else adata.layers[layer]
        check_sparse_structure(X, where="adata.X" if layer is None else f"adata.layers[{layer!r}]")  # before scanpy
        hv = _highly_variable(X, n, None if batch_key is None else adata.obs[batch_key].values)
        # keep the slide's gene order
        return adata.var_names[hv].tolist()
    names = list(genes)
    missing = [g for g in names if g not in adata.var_names]
    if missing:
        raise SlideError(f"{len(missing)} requested genes are not in adata.var_names, e.g. {missing[:5]}")
    if len(set(names)) != len(names):
        raise SlideError("the gene list contains duplicates")
    return names


def _highly_variable(X, n: int, batch: np.ndarray | None) -> np.ndarray:
    """(g,) bool: the ``n`` most variable columns of counts ``X`` (scanpy ``seurat_v3``, per batch when given)."""
    import scanpy as sc

    tmp = AnnData(X=X)
    key = None
    if batch is not None:
        key = "batch"
        tmp.obs[key] = np.asarray(batch).astype(str)
    try:
        sc.pp.highly_variable_genes(tmp, n_top_genes=n, flavor="seurat_v3", batch_key=key)
    except ImportError:  # scikit-misc missing: fall back to the counts-based Pearson residual flavour
        sc.experimental.pp.highly_variable_genes(tmp, n_top_genes=n, batch_key=key)
    return tmp.var["highly_variable"].to_numpy()


def most_variable(counts, n: int, *, batch: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``n`` most variable columns of a cells x genes count matrix, in column order.

    scanpy's ``seurat_v3`` flavour on counts, per batch when ``batch`` (n_cells,) is given (as
    :func:`select_genes` with an integer). ``n`` at least the number of columns gives every column.
    """
    if n >= counts.shape[1]:
        return np.arange(counts.shape[1])
    return np.flatnonzero(_highly_variable(counts, int(n), batch))


def align_genes(adata: AnnData, genes: Sequence[str], *, layer: str | None = None) -> AnnData:
    """A new AnnData with exactly ``genes`` (model order); genes absent from the slide are all-zero.

    Only used when the user explicitly asks to align a slide to a model trained
    on other genes. obs and obsm are shared, the input is not modified.
    """
    import scipy.sparse as sp

    X = adata.X if layer is None else adata.layers[layer]
    present = [g for g in genes if g in adata.var_names]
    if not present:
        raise SlideError("none of the model's genes are in the slide; alignment is impossible")
    src = adata.var_names.get_indexer(present)
    dst = np.asarray([i for i, g in enumerate(genes) if g in adata.var_names])
    Xs = sp.csr_matrix(X)[:, src].tocoo()
    out = sp.csr_matrix((Xs.data, (Xs.row, dst[Xs.col])), shape=(adata.n_obs, len(genes)))
    new = AnnData(X=out, obs=adata.obs.copy(), obsm=dict(adata.obsm))
    new.var_names = list(genes)
    return new
