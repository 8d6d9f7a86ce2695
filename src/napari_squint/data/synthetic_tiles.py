"""Larger synthetic slides from one: copies of every section placed side by side (scaling benchmarks)."""

from __future__ import annotations

import copy

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

from napari_squint._constants import SECTION_KEY, SPATIAL_KEY

__all__ = ["tile_sections"]


def _is_int_at_least(value, low: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low


def tile_sections(
    adata: anndata.AnnData,
    n_copies: int,
    *,
    gap: float | None = None,
    section_key: str = SECTION_KEY,
    spatial_key: str = SPATIAL_KEY,
) -> anndata.AnnData:
    """Replicate every section of ``adata`` ``n_copies`` times as new sections.

    Copy ``i`` renames each section ``s`` to ``f"{s}_tile{i}"`` and each cell
    ``c`` to ``f"{c}_tile{i}"``, and is shifted along x by ``i * (extent + gap)``
    where ``extent`` is the x extent of ``adata``, so no two copies overlap.

    Parameters
    ----------
    adata
        Input data, real or synthetic; not modified.
    n_copies
        Number of copies, at least 1.
    gap
        Space between copies along x, in coordinate units; ``None`` uses 5% of
        the x extent.
    section_key
        obs column naming the sections; when absent, the whole slide is one
        section named ``"section"``.
    spatial_key
        obsm key of the ``(n, 2+)`` coordinates; when absent nothing is shifted.

    Returns
    -------
    anndata.AnnData
        ``n_copies * n_obs`` cells. ``X`` and layers stay sparse (CSR) when
        they are sparse, other obsm entries and obs columns are repeated,
        ``var``, ``varm`` and ``uns`` are kept, ``obsp`` is dropped.

    Raises
    ------
    ValueError
        If ``n_copies`` < 1 or ``gap`` is negative.
    """
    if not _is_int_at_least(n_copies, 1):
        raise ValueError(f"n_copies must be an integer >= 1, got {n_copies!r}")
    if gap is not None and not (np.isfinite(gap) and gap >= 0):
        raise ValueError(f"gap must be a finite number >= 0 or None, got {gap!r}")
    n_copies = int(n_copies)
    obs = adata.obs.copy()
    if section_key in obs:
        sections = obs[section_key].astype(str).to_numpy()
    else:
        sections = np.full(adata.n_obs, "section", dtype=object)

    obs_parts = []
    for i in range(n_copies):
        part = obs.copy()
        part.index = obs.index.astype(str) + f"_tile{i}"
        part[section_key] = pd.array(np.char.add(sections.astype(str), f"_tile{i}"), dtype=object)
        obs_parts.append(part)
    new_obs = pd.concat(obs_parts)
    new_obs[section_key] = pd.Categorical(
        new_obs[section_key].to_numpy(),
        categories=pd.unique(new_obs[section_key].to_numpy()),
    )

    obsm = {key: _tile_rows(value, n_copies) for key, value in adata.obsm.items()}
    for key, value in obsm.items():
        if isinstance(value, pd.DataFrame):  # obsm data frames must carry the new obs names
            value.index = new_obs.index
    if spatial_key in adata.obsm and adata.n_obs:
        base = np.asarray(adata.obsm[spatial_key])
        extent = float(base[:, 0].max() - base[:, 0].min())
        step = extent + (0.05 * extent if gap is None else float(gap))
        shift = np.repeat(np.arange(n_copies, dtype=np.float64) * step, adata.n_obs)
        coords = obsm[spatial_key]
        coords[:, 0] = (coords[:, 0] + shift).astype(coords.dtype)
    layers = {key: _tile_rows(value, n_copies) for key, value in adata.layers.items()}
    X = None if adata.X is None else _tile_rows(adata.X, n_copies)
    return anndata.AnnData(
        X=X,
        obs=new_obs,
        var=adata.var.copy(),
        obsm=obsm,
        varm=dict(adata.varm),
        layers=layers,
        uns=copy.deepcopy(dict(adata.uns)),
    )


# --- parameter checks ------------------------------------------------------------


def _tile_rows(value, n_copies: int):
    """Stack ``n_copies`` copies of a matrix, DataFrame or array along rows."""
    if isinstance(value, pd.DataFrame):
        return pd.concat([value] * n_copies, ignore_index=True)
    if sp.issparse(value):
        csr = sp.csr_matrix(value)
        n_rows = csr.shape[0]
        total = csr.nnz * n_copies
        idx_dtype = np.int32 if total < np.iinfo(np.int32).max else np.int64
        indptr = np.empty(n_rows * n_copies + 1, dtype=idx_dtype)
        indptr[0] = 0
        base = csr.indptr[1:].astype(idx_dtype)
        for i in range(n_copies):
            indptr[1 + i * n_rows : 1 + (i + 1) * n_rows] = base + i * csr.nnz
        return sp.csr_matrix(
            (np.tile(csr.data, n_copies), np.tile(csr.indices.astype(idx_dtype), n_copies), indptr),
            shape=(n_rows * n_copies, csr.shape[1]),
        )
    arr = np.asarray(value)
    return np.concatenate([arr] * n_copies, axis=0)
