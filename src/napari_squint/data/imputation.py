"""The domain rules of in-painting that every model shares, each written once.

* :func:`section_median_depth`: the read depth given to an imputed cell, the
  median library of the observed cells of its section;
* :func:`microenv_members` / :func:`microenv_sum`: an imputed
  microenvironment (X_nbr) as the measured counts of its observed members
  plus the imputed counts of its target members;
* :func:`log_normalise_rows`: ``log1p`` of counts per 10,000 of a dense block, and
  :func:`counts_from_log`, its inverse at a given depth;
* :func:`hops_to_observed`: the infill rings, hops from each target to the
  nearest observed cell (a multi-source breadth-first search,
  :func:`scipy.sparse.csgraph.shortest_path`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from napari_squint.data.validate import SlideError, section_depth

__all__ = ["counts_from_log", "hop_distance", "hops_to_observed", "log_normalise_rows", "masked_depth", "microenv_members", "microenv_sum", "section_median_depth"]


def section_median_depth(library: np.ndarray, groups: np.ndarray, observed: np.ndarray, wanted,
                         *, obs_names=None) -> np.ndarray:
    """Read depth of imputed cells: the median library of the observed cells of their section.

    Parameters
    ----------
    library
        ``(n,)`` measured libraries of the slide's cells.
    groups
        ``(n,)`` section of each cell (labels or ids).
    observed
        ``(n,)`` bool, cells whose counts may be read.
    wanted
        ``(t,)`` section of each imputed cell.
    obs_names
        Cell names, for the error message (default: indices).

    Returns
    -------
    numpy.ndarray
        ``(t,)`` float64 depths. A section with no observed cell takes the
        median over every observed cell of the slide.

    Raises
    ------
    SlideError
        No cell is observed, or a median is not positive (names the section).
    """
    library = np.asarray(library, dtype=np.float64)
    groups, wanted = np.asarray(groups), np.asarray(wanted)
    observed = np.asarray(observed, dtype=bool)
    if not observed.any():
        raise SlideError("every cell of the slide is a target: nothing is observed to impute from")
    names = obs_names if obs_names is not None else np.arange(library.size)
    out = np.zeros(wanted.shape[0])
    for g in np.unique(wanted):
        ref = observed & (groups == g)
        out[wanted == g] = section_depth(library, ref if ref.any() else observed, names, g)
    return out


def masked_depth(data, masked: np.ndarray, library: np.ndarray | None = None) -> np.ndarray:
    """Read depth of every cell of prepared ``data`` when ``masked`` cells are imputed, float64 ``(n,)``.

    Observed cells keep their measured library; a masked cell gets
    :func:`section_median_depth` over its section (its batch id). A given
    ``library`` ``(n,)`` is used as it is.
    """
    if library is not None:
        est = np.asarray(library, dtype=np.float64)
        if est.shape != (data.n_cells,):
            raise ValueError(f"library has shape {est.shape}; expected ({data.n_cells},)")
        return est
    est = data.library().astype(np.float64)
    if masked.any():
        est[masked] = section_median_depth(est, data.batch, ~masked, data.batch[masked], obs_names=data.obs_names)
    return est


def microenv_members(cells: np.ndarray, nbr_rows: np.ndarray, targets: np.ndarray,
                     n_measured: int, *, include_self: bool = True) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Who makes up each microenvironment: measured members and target members.

    A cell's microenvironment is itself plus its graph row (``-1`` pads).

    Parameters
    ----------
    cells
        ``(m,)`` ids of the cells whose microenvironments are formed.
    nbr_rows
        ``(m, w)`` their neighbour rows (ids; ``-1`` pads).
    targets
        Sorted unique ids of every imputed cell (ids ``>= n_measured``, cells
        created in empty regions, must be among them).
    n_measured
        Number of slide cells (ids below it have measured counts).
    include_self
        Count the cell itself (True) or only its row (the row is the whole membership).

    Returns
    -------
    a_meas, a_imp
        ``(m, n_measured)`` and ``(m, len(targets))`` 0/1 membership matrices.
    """
    cells = np.asarray(cells, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    members = np.asarray(nbr_rows, dtype=np.int64)
    if include_self:
        members = np.concatenate([cells[:, None], members], axis=1)
    rows = np.broadcast_to(np.arange(cells.size)[:, None], members.shape)
    valid = members >= 0
    slot = np.searchsorted(targets, np.maximum(members, 0))
    hit = slot < targets.size
    hit[hit] = targets[slot[hit]] == members[hit]
    is_t = valid & hit
    meas = valid & ~is_t
    a_meas = sp.csr_matrix((np.ones(int(meas.sum())), (rows[meas], members[meas])), shape=(cells.size, n_measured))
    a_imp = sp.csr_matrix((np.ones(int(is_t.sum())), (rows[is_t], slot[is_t])), shape=(cells.size, targets.size))
    return a_meas, a_imp


def microenv_sum(counts, a_meas: sp.csr_matrix, a_imp: sp.csr_matrix, imputed: np.ndarray) -> np.ndarray:
    """Measured counts of the observed members plus imputed counts of the target members, float64 ``(m, g)``."""
    measured = a_meas @ counts
    measured = measured.toarray() if sp.issparse(measured) else np.asarray(measured)
    return measured.astype(np.float64) + a_imp @ np.asarray(imputed, dtype=np.float64)


def log_normalise_rows(counts: np.ndarray, target_sum: float = 1e4) -> np.ndarray:
    """log1p of counts per ``target_sum`` of a dense block, float32; all-zero rows stay zero.

    The same arithmetic as :func:`~napari_squint.data.prepare.log_normalise_sparse`
    (scanpy's ``normalize_total`` + ``log1p``), in numpy for the small dense
    blocks of one infill ring, where scanpy's per-call overhead would dominate.
    """
    x = np.asarray(counts, dtype=np.float32)
    lib = x.sum(1, keepdims=True)
    return np.log1p(x / np.where(lib > 0, lib, 1.0) * np.float32(target_sum)).astype(np.float32)


def counts_from_log(x_log: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Turn normalised log expression into expected counts at a given depth.

    ``expm1`` undoes ``log1p``; each row is then rescaled to sum to its
    ``library``, so only the reconstructed *composition* is kept (a
    reconstruction does not sum exactly to 10^4).

    Parameters
    ----------
    x_log
        ``(m, g)`` log1p(counts per 10^4) (e.g. a CIFM reconstruction).
    library
        ``(m,)`` total counts of each row.

    Returns
    -------
    numpy.ndarray
        ``(m, g)`` float64 counts whose rows sum to ``library``.
    """
    e = np.expm1(np.clip(np.asarray(x_log, dtype=np.float64), 0.0, None))
    tot = e.sum(1, keepdims=True)
    p = np.divide(e, tot, out=np.full_like(e, 1.0 / max(e.shape[1], 1)), where=tot > 0)
    return p * np.asarray(library, dtype=np.float64)[:, None]


def hop_distance(reads: sp.spmatrix, sources: np.ndarray) -> np.ndarray:
    """Hops from the nearest of ``sources``: a multi-source breadth-first search (scipy.sparse.csgraph).

    Parameters
    ----------
    reads
        ``(N, N)`` sparse; cell ``i`` is one hop from ``j`` when ``reads[i, j] != 0``.
    sources
        ``(N,)`` bool, the cells at distance 0.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 hops; ``inf`` for cells no source reaches.
    """
    sources = np.asarray(sources, dtype=bool)
    n = sources.size
    coo = sp.coo_matrix(reads)
    keep = coo.data != 0
    src = np.flatnonzero(sources)
    # edges j -> i when i reads j, and a super-source (node n) one hop before every source
    tail = np.concatenate([coo.col[keep], np.full(src.size, n)])
    head = np.concatenate([coo.row[keep], src])
    edges = sp.csr_matrix((np.ones(tail.size), (tail, head)), shape=(n + 1, n + 1))
    return csgraph.shortest_path(edges, method="D", directed=True, unweighted=True, indices=n)[:n] - 1


def hops_to_observed(cells: np.ndarray, reads: sp.spmatrix, observed: np.ndarray) -> np.ndarray:
    """Infill rings: hops from each of ``cells`` to the nearest observed cell.

    Parameters
    ----------
    cells
        ``(t,)`` ids of the targets.
    reads
        ``(N, N)`` sparse, ``reads[i, j] != 0`` when cell ``i`` reads cell
        ``j`` (a graph row or an adjacency); only the targets' rows matter.
    observed
        ``(N,)`` bool, cells known from the start.

    Returns
    -------
    numpy.ndarray
        ``(t,)`` int64 rings, 1 for a target reading an observed cell; a
        target with no path to an observed cell gets ``max + 1`` (1 when no
        target is connected).
    """
    cells = np.asarray(cells, dtype=np.int64)
    observed = np.asarray(observed, dtype=bool)
    is_t = np.zeros(observed.size, dtype=bool)
    is_t[cells] = True
    coo = sp.coo_matrix(reads)
    read = is_t[coo.row]  # only targets' rows: a target is reached from what it reads
    rows = sp.csr_matrix((coo.data[read], (coo.row[read], coo.col[read])), shape=coo.shape)
    dist = hop_distance(rows, observed)[cells]
    reached = np.isfinite(dist)
    ring = np.zeros(cells.size, dtype=np.int64)
    ring[reached] = dist[reached].astype(np.int64)
    ring[~reached] = (ring[reached].max() if reached.any() else 0) + 1
    return ring
