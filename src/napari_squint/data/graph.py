"""k-nearest-neighbour cell graphs, built per section with scipy's cKDTree.

The graph is stored in two forms:

* ``edge_index`` (2, E): symmetrised kNN edges ``src -> dst`` (both directions,
  no self loops), as used by torch-geometric;
* a padded neighbour table ``nbr`` (n, max_degree) with ``-1`` padding, sorted
  by distance, used by the mini-batch sampler (fast gathers, bounded memory).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from napari_squint.data.radius import median_nn_distance  # noqa: F401  (one rule: coincident cells ignored)


def knn(coords: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every point, excluding the point itself.

    Returns
    -------
    idx, dist
        (n, k) int64 neighbour indices and float64 distances, nearest first.
    """
    n = coords.shape[0]
    if n < k + 1:
        raise ValueError(f"k={k} needs at least {k + 1} cells, got {n}")
    tree = cKDTree(coords)
    dist, idx = tree.query(coords, k=k + 1, workers=-1)
    # drop self (the first column, or wherever the point itself appears when duplicates exist)
    self_col = idx == np.arange(n)[:, None]
    first = np.where(self_col.any(1), self_col.argmax(1), k)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), first] = False
    idx = idx[keep].reshape(n, k)
    dist = dist[keep].reshape(n, k)
    return idx.astype(np.int64), dist


def symmetric_adjacency(idx: np.ndarray, dist: np.ndarray) -> sp.csr_matrix:
    """Symmetrise a kNN table: i~j when j is among i's k nearest or i among j's.

    Returns a CSR matrix whose stored values are the distances (+ a tiny epsilon
    so that zero distances between duplicated points are kept).
    """
    n, k = idx.shape
    rows = np.repeat(np.arange(n), k)
    a = sp.csr_matrix((dist.ravel() + 1e-12, (rows, idx.ravel())), shape=(n, n))
    a = a.maximum(a.T).tocsr()
    a.sort_indices()
    return a


def padded_neighbours(adj: sp.csr_matrix, max_degree: int) -> np.ndarray:
    """Padded (n, max_degree) neighbour table from a distance-valued adjacency.

    Rows are sorted nearest first; cells with more than ``max_degree``
    neighbours keep the nearest ones (this only happens for hub cells of the
    symmetrised graph). Padding is ``-1``.
    """
    n = adj.shape[0]
    deg = np.diff(adj.indptr)
    rows = np.repeat(np.arange(n), deg)
    order = np.lexsort((adj.data, rows))  # by row, then distance
    cols = adj.indices[order]
    # position of each entry within its row
    pos = np.arange(cols.size) - np.repeat(adj.indptr[:-1], deg)
    keep = pos < max_degree
    out = np.full((n, max_degree), -1, dtype=np.int64)
    out[rows[keep], pos[keep]] = cols[keep]
    return out


def edge_index_from_padded(nbr: np.ndarray) -> np.ndarray:
    """(2, E) edge index ``src=neighbour -> dst=cell`` from a padded table."""
    n, m = nbr.shape
    dst = np.repeat(np.arange(n), m)
    src = nbr.ravel()
    ok = src >= 0
    return np.stack([src[ok], dst[ok]]).astype(np.int64)


def knn_graph(coords: np.ndarray, k: int = 8, *, max_degree: int | None = None):
    """Symmetrised kNN graph of one section.

    Parameters
    ----------
    coords
        (n, 2) or (n, 3) coordinates in any unit (one unit for every column).
    k
        Number of nearest neighbours (the paper uses 8).
    max_degree
        Width of the padded table; default ``2 * k``.

    Returns
    -------
    nbr
        (n, max_degree) padded neighbour table, ``-1`` padded, nearest first.
    idx, dist
        The raw (n, k) kNN table and distances (for covariates).
    """
    idx, dist = knn(coords, k)
    adj = symmetric_adjacency(idx, dist)
    nbr = padded_neighbours(adj, max_degree or 2 * k)
    return nbr, idx, dist


def neighbourhood_sum(X: sp.spmatrix, nbr: np.ndarray) -> sp.csr_matrix:
    """X_nbr: the summed counts of each cell and its neighbours, kept sparse.

    Parameters
    ----------
    X
        (n, g) sparse counts.
    nbr
        (n, m) padded neighbour table (``-1`` padding).
    """
    n = nbr.shape[0]
    rows = np.repeat(np.arange(n), nbr.shape[1])
    cols = nbr.ravel()
    ok = cols >= 0
    a = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.float32), (rows[ok], cols[ok])), shape=(n, n)
    )
    a = a + sp.identity(n, dtype=np.float32, format="csr")
    out = (a @ sp.csr_matrix(X, dtype=np.float32)).tocsr()
    out.sort_indices()
    return out


def nearest_sources(coords: np.ndarray, source_mask: np.ndarray, queries: np.ndarray, k: int, *, section=None):
    """The ``k`` nearest source cells of each query cell, searched within its own section.

    Parameters
    ----------
    coords
        ``(n, d)`` coordinates of all cells (any unit).
    source_mask
        ``(n,)`` bool, the cells that may be returned (e.g. observed cells).
    queries
        ``(m,)`` indices of the cells whose neighbours are wanted.
    k
        Neighbours per query; fewer where a section has fewer source cells.
    section
        ``(n,)`` section labels, or None for one section.

    Yields
    ------
    (pos, nn)
        Per section: ``pos`` indexes ``queries``; ``nn`` ``(len(pos), min(k, sources))`` cell indices, nearest first.

    Raises
    ------
    SlideError
        A section holds query cells but no source cell.
    """
    from napari_squint.data.validate import SlideError

    source = np.asarray(source_mask, dtype=bool)
    queries = np.asarray(queries, dtype=np.int64)
    labels = np.zeros(coords.shape[0], dtype=np.int64) if section is None else np.asarray(section)
    for s in np.unique(labels[queries]):
        pos = np.flatnonzero(labels[queries] == s)
        src = np.flatnonzero(source & (labels == s))
        if src.size == 0:
            name = s.item() if isinstance(s, np.generic) else s
            raise SlideError(f"section {name!r} holds test cells but no observed cell")
        kk = min(k, src.size)
        _, nn = cKDTree(coords[src]).query(coords[queries[pos]], k=kk)
        yield pos, src[np.asarray(nn).reshape(pos.size, kk)]
