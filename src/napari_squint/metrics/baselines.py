"""Reference imputation methods that any learned model must beat.

All baselines work in count space and return dense ``float64`` arrays of shape
``(n_test, n_genes)``, rows in the order of ``test_idx``; score them with
:func:`~napari_squint.metrics.evaluate_imputation` exactly like a model.

Coordinates may be in any unit (pixels, micrometres, a stage's own units) and
in 2-D or 3-D: the spatial baselines only rank neighbours by Euclidean
distance (``scipy.spatial.cKDTree``) and never use a distance threshold.
Only rows of *observed* cells of ``counts`` are ever read, so passing the full
matrix, held-out truth included, cannot leak the answer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial import cKDTree

from napari_squint.data.graph import knn
from napari_squint.data.imputation import hop_distance, microenv_members, microenv_sum

__all__ = [
    "knn_index",
    "mean_profile",
    "microenvironment",
    "nbr_profile",
    "neighbourhood_average",
    "ring_infill",
]


# --- input checks -------------------------------------------------------------
def _coords(coords) -> np.ndarray:
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < 1:
        raise ValueError(f"coords must be a 2-D (cells, dims) array, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("coords contain NaN or infinite values")
    return c


def _matrix(value):
    """``value`` as a float64 CSR matrix if sparse, else as a float64 ndarray."""
    if sp.issparse(value):
        return sp.csr_matrix(value, dtype=np.float64)
    return np.asarray(value, dtype=np.float64)


def _counts(counts, n: int, name: str = "counts"):
    x = _matrix(counts)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n}, n_genes), got {x.shape}")
    return x


def _mask(mask, n: int, name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != (n,) or m.dtype != bool:
        raise ValueError(f"{name} must be a boolean array of shape ({n},), got {m.dtype} {m.shape}")
    return m


def _index(idx, n: int, name: str = "test_idx") -> np.ndarray:
    i = np.asarray(idx)
    if i.ndim != 1 or not (i.size == 0 or np.issubdtype(i.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D array of integer cell indices")
    i = i.astype(np.intp)
    if i.size and (i.min() < 0 or i.max() >= n):
        raise ValueError(f"{name} holds indices outside [0, {n})")
    if np.unique(i).size != i.size:
        raise ValueError(f"{name} holds duplicate indices")
    return i


def _sections(section, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and their labels; one section when ``section`` is None."""
    if section is None:
        return np.zeros(n, dtype=np.intp), np.array([None], dtype=object)
    labels = np.asarray(section)
    if labels.shape != (n,):
        raise ValueError(f"section must have shape ({n},), got {labels.shape}")
    codes, uniques = pd.factorize(labels)
    if (codes < 0).any():
        raise ValueError("section contains missing labels")
    return codes.astype(np.intp), np.asarray(uniques, dtype=object)


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _average(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int, kk: np.ndarray):
    """Sparse ``(n_rows, n_cols)`` matrix averaging ``cols`` into each row."""
    return sp.csr_matrix((1.0 / kk, (rows, cols)), shape=(n_rows, n_cols))


def _check_test(observed: np.ndarray, test: np.ndarray) -> None:
    if observed[test].any():
        raise ValueError(
            "test_idx contains observed cells; a test cell must be held out "
            "(observed_mask False) or its own counts would leak into its estimate"
        )


# --- neighbours ---------------------------------------------------------------
def knn_index(coords, k: int = 8, *, section=None) -> np.ndarray:
    """The ``k`` nearest neighbours of every cell, within its section.

    Parameters
    ----------
    coords
        ``(n, d)`` coordinates in any unit.
    k
        Neighbours per cell, the cell itself excluded.
    section
        Optional ``(n,)`` labels; neighbours are searched only among cells
        with the same label (sections of a stack are never mixed).

    Returns
    -------
    numpy.ndarray
        ``(n, k)`` integer indices, nearest first; ``-1`` pads rows of cells
        whose section has ``k`` or fewer cells. Suitable for
        :func:`microenvironment` and :func:`nbr_profile`.
    """
    c = _coords(coords)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k!r}")
    codes, _ = _sections(section, c.shape[0])
    out = np.full((c.shape[0], k), -1, dtype=np.intp)
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        kk = min(k, members.size - 1)
        if kk >= 1:  # the graph's kNN (self excluded; with duplicate coordinates the farthest goes)
            nn, _ = knn(c[members], kk)
            out[members, :kk] = members[nn]
    return out


def _hops(coords: np.ndarray, observed: np.ndarray, k: int) -> np.ndarray:
    """Graph distance (hops on the symmetric kNN graph) to the nearest observed cell.

    Observed cells get 0; cells not connected to any observed cell get
    ``inf`` (:func:`~napari_squint.data.imputation.hop_distance`).
    """
    n = coords.shape[0]
    kk = min(k + 1, n)
    _, nn = cKDTree(coords).query(coords, k=kk)
    nn = nn.reshape(n, kk)
    ones = np.ones(nn.size, dtype=bool)
    adj = sp.csr_matrix((ones, (np.repeat(np.arange(n), kk), nn.ravel())), shape=(n, n))
    return hop_distance((adj + adj.T).tocsr(), observed)


# --- baselines ------------------------------------------------------------------
def mean_profile(train_counts, n_test: int) -> np.ndarray:
    """Predict the same average training profile for every test cell.

    Parameters
    ----------
    train_counts
        ``(n_train, n_genes)`` counts of training cells (or microenvironments),
        dense or sparse.
    n_test
        Number of rows to return.

    Returns
    -------
    numpy.ndarray
        ``(n_test, n_genes)``, every row equal to the mean *composition* of
        the training rows (each row divided by its total, so every cell
        weighs the same whatever its depth), scaled to the *median* training
        library size (robust to a few very deep cells). Rows with zero total
        are left out of both. After :func:`log_normalise` only the
        composition matters; the scaling just keeps the output in plausible
        count units.

    Notes
    -----
    The profile is location-blind: it scores 0 on
    :func:`~napari_squint.metrics.pearson_per_gene` by construction and is a
    floor for :func:`~napari_squint.metrics.pearson_per_cell`.
    """
    x = _matrix(train_counts)
    if x.ndim != 2:
        raise ValueError(f"train_counts must be a 2-D (cells, genes) array, got shape {x.shape}")
    if n_test < 0:
        raise ValueError(f"n_test must be >= 0, got {n_test!r}")
    lib = np.asarray(x.sum(axis=1)).ravel()
    keep = lib > 0
    if not keep.any():
        raise ValueError("train_counts has no row with a positive total")
    scale = sp.diags(1.0 / lib[keep])
    comp = np.asarray((scale @ x[keep]).mean(axis=0)).ravel()
    profile = comp * np.median(lib[keep])
    return np.tile(profile, (int(n_test), 1))


def neighbourhood_average(
    coords, counts, observed_mask, test_idx, *, k: int = 8, section=None, space: str = "counts"
) -> np.ndarray:
    """Average the counts of each test cell's ``k`` nearest observed cells.

    Parameters
    ----------
    coords
        ``(n, d)`` coordinates of all cells, any unit.
    counts
        ``(n, n_genes)`` counts of all cells (dense or sparse); only rows of
        observed cells are read.
    observed_mask
        ``(n,)`` bool, True for cells whose counts may be used (outside the
        held-out patches).
    test_idx
        ``(n_test,)`` indices of held-out cells to impute (none observed).
    k
        Neighbours averaged, with equal weight. If a section has fewer than
        ``k`` observed cells, all of them are used.
    section
        Optional ``(n,)`` labels; neighbours come only from the test cell's
        own section.
    space
        ``"counts"`` (default; the baseline of the paper's protocol): the mean
        of the neighbours' counts. ``"log"``: the mean of their log-normalised
        profiles (``log1p`` of 10,000 per cell), returned as counts at the
        neighbours' mean library, so that log-normalising the result gives
        back that mean up to the row renormalisation. The log variant is the
        fair comparison for models that report log-space estimates
        (``draw="logmean"`` in :mod:`napari_squint.tasks.impute`).

    Returns
    -------
    numpy.ndarray
        ``(n_test, n_genes)`` estimated counts.

    Raises
    ------
    ValueError
        On malformed input, if a test cell is observed, if a section that
        holds test cells has no observed cell, or on an unknown ``space``.

    Notes
    -----
    Deep inside a large patch every nearest observed cell lies on the patch
    boundary, so estimates there are boundary profiles; :func:`ring_infill`
    propagates them inwards instead.
    """
    c = _coords(coords)
    n = c.shape[0]
    x = _counts(counts, n)
    observed = _mask(observed_mask, n, "observed_mask")
    test = _index(test_idx, n)
    _check_test(observed, test)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k!r}")
    if space not in ("counts", "log"):
        raise ValueError(f"space={space!r}: expected 'counts' or 'log'")
    codes, labels = _sections(section, n)
    rows, cols, kks = [], [], []
    for code in np.unique(codes[test]):
        src = np.flatnonzero((codes == code) & observed)
        if src.size == 0:
            raise ValueError(f"section {labels[code]!r} holds test cells but no observed cell")
        pos = np.flatnonzero(codes[test] == code)
        kk = min(k, src.size)
        _, nn = cKDTree(c[src]).query(c[test[pos]], k=kk)
        rows.append(np.repeat(pos, kk))
        cols.append(src[nn.reshape(pos.size, kk)].ravel())
        kks.append(np.full(pos.size * kk, kk, dtype=np.float64))
    if not rows:
        return np.zeros((0, x.shape[1]))
    avg = _average(np.concatenate(rows), np.concatenate(cols), test.size, n, np.concatenate(kks))
    if space == "counts":
        return _dense(avg @ x)
    used = np.unique(np.concatenate(cols))
    xu = _dense(x[used]).astype(np.float64)
    lib = xu.sum(1)
    scale = np.divide(1e4, lib, out=np.zeros_like(lib), where=lib > 0)
    sel = sp.csr_matrix((np.ones(used.size), (used, np.arange(used.size))), shape=(n, used.size))
    a = avg @ sel  # (n_test, used)
    mean_log = _dense(a @ np.log1p(xu * scale[:, None]))
    mean_lib = _dense(a @ lib[:, None]).ravel()
    return np.expm1(mean_log) * (np.maximum(mean_lib, 1e-12) / 1e4)[:, None]


def ring_infill(
    coords,
    counts,
    observed_mask,
    test_idx,
    *,
    k: int = 8,
    section=None,
    return_rings: bool = False,
):
    """Fill held-out regions ring by ring, from their boundary inwards.

    Held-out cells are ordered by graph distance to the nearest observed cell:
    hops on the symmetric ``k``-nearest-neighbour graph of all cells of the
    section (a unit-free distance). Ring 1 (cells next to observed ones) gets
    the mean counts of its ``k`` nearest observed cells, as in
    :func:`neighbourhood_average`; those estimates are then treated as
    observed, and ring 2 gets the mean of its ``k`` nearest cells among
    observed and ring-1 cells, and so on. Cells of one ring never use each
    other. Held-out cells connected to no observed cell form a last ring.

    Every held-out cell (``observed_mask`` False) of a section that contains
    test cells is filled, including held-out cells not in ``test_idx``, so
    that rings propagate through them; only the rows of ``test_idx`` are
    returned.

    Parameters
    ----------
    coords, counts, observed_mask, test_idx, k, section
        As in :func:`neighbourhood_average`; ``k`` sets both the graph that
        defines the rings and the number of cells averaged.
    return_rings
        If True, also return the ring of every test cell.

    Returns
    -------
    estimates : numpy.ndarray
        ``(n_test, n_genes)`` estimated counts.
    rings : numpy.ndarray, optional
        ``(n_test,)`` ring numbers (1 = next to an observed cell; the
        processing order). Returned only if ``return_rings`` is True.

    Raises
    ------
    ValueError
        As :func:`neighbourhood_average`.

    Notes
    -----
    Single-pass propagation of this kind is a cheap approximation of
    diffusing the boundary inwards; on smooth gradients it lags less than
    :func:`neighbourhood_average`, whose estimates deep in a patch are
    averages of cells on the boundary only.
    """
    c = _coords(coords)
    n = c.shape[0]
    x = _counts(counts, n)
    observed = _mask(observed_mask, n, "observed_mask")
    test = _index(test_idx, n)
    _check_test(observed, test)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k!r}")
    codes, labels = _sections(section, n)
    n_genes = x.shape[1]
    out = np.zeros((test.size, n_genes))
    rings_out = np.zeros(test.size, dtype=np.intp)
    for code in np.unique(codes[test]):
        sec = np.flatnonzero(codes == code)
        obs_local = observed[sec]
        if not obs_local.any():
            raise ValueError(f"section {labels[code]!r} holds test cells but no observed cell")
        hops = _hops(c[sec], obs_local, k)
        unknown = np.flatnonzero(~obs_local)  # local indices into sec
        ring = hops[unknown]
        finite = np.isfinite(ring)
        last = int(ring[finite].max()) + 1 if finite.any() else 1
        ring = np.where(finite, ring, last).astype(np.intp)
        # estimates of the section's held-out cells, row j <-> local cell unknown[j]
        est = np.zeros((unknown.size, n_genes))
        slot = np.full(sec.size, -1, dtype=np.intp)
        slot[unknown] = np.arange(unknown.size)
        known = obs_local.copy()
        for r in np.unique(ring):
            targets = unknown[ring == r]
            src = np.flatnonzero(known)
            kk = min(k, src.size)
            _, nn = cKDTree(c[sec[src]]).query(c[sec[targets]], k=kk)
            nbrs = src[nn.reshape(targets.size, kk)]
            # observed neighbours are read from counts, earlier rings from est
            obs_nb = obs_local[nbrs]
            row = np.repeat(np.arange(targets.size), kk).reshape(targets.size, kk)
            kks = np.full(nbrs.shape, float(kk))
            w_obs = _average(row[obs_nb], sec[nbrs[obs_nb]], targets.size, n, kks[obs_nb])
            w_est = _average(
                row[~obs_nb], slot[nbrs[~obs_nb]], targets.size, unknown.size, kks[~obs_nb]
            )
            est[slot[targets]] = _dense(w_obs @ x) + w_est @ est
            known[targets] = True
        pos = np.flatnonzero(codes[test] == code)
        local = np.searchsorted(sec, test[pos])
        out[pos] = est[slot[local]]
        rings_out[pos] = ring[slot[local]]
    return (out, rings_out) if return_rings else out


# --- microenvironments -----------------------------------------------------------
def _members(nbr_idx, n: int, cells, include_self: bool) -> tuple[np.ndarray, np.ndarray]:
    """Member matrix ``(n_cells, m)`` of the microenvironments of ``cells`` (-1 = none)."""
    nbr = np.asarray(nbr_idx)
    if nbr.ndim != 2 or nbr.shape[0] != n or not np.issubdtype(nbr.dtype, np.integer):
        raise ValueError(
            f"nbr_idx must be an integer array of shape ({n}, k), got {nbr.dtype} {nbr.shape}"
        )
    if nbr.size and (nbr.min() < -1 or nbr.max() >= n):
        raise ValueError(f"nbr_idx holds indices outside [0, {n}) (use -1 for a missing neighbour)")
    cells = np.arange(n) if cells is None else _index(cells, n, "cells")
    members = nbr[cells].astype(np.intp)
    if include_self:
        if (members == cells[:, None]).any():
            raise ValueError(
                "nbr_idx lists a cell among its own neighbours while include_self=True, which "
                "would count it twice; drop that column or pass include_self=False"
            )
        members = np.concatenate([cells[:, None], members], axis=1)
    return cells, members


def _sum_rows(members: np.ndarray, n_cols: int, select: np.ndarray, col_of) -> sp.csr_matrix:
    """Sparse ``(n_cells, n_cols)`` summing matrix over the selected members."""
    rows = np.broadcast_to(np.arange(members.shape[0])[:, None], members.shape)[select]
    cols = col_of(members[select])
    return sp.csr_matrix((np.ones(cols.size), (rows, cols)), shape=(members.shape[0], n_cols))


def microenvironment(profiles, nbr_idx, *, cells=None, include_self: bool = True) -> np.ndarray:
    """Microenvironment counts ``X_nbr``: a cell's counts plus its neighbours'.

    Parameters
    ----------
    profiles
        ``(n, n_genes)`` counts (measured or estimated) of all cells.
    nbr_idx
        ``(n, k)`` integer neighbour indices (e.g. :func:`knn_index`);
        ``-1`` marks a missing neighbour.
    cells
        Indices of the cells whose ``X_nbr`` is returned; all cells if None.
    include_self
        If True (default) the cell is added to its ``k`` neighbours and
        ``nbr_idx`` must not list it; if False ``nbr_idx`` rows already are
        the full membership.

    Returns
    -------
    numpy.ndarray
        ``(n_cells, n_genes)`` summed counts.
    """
    n = np.shape(nbr_idx)[0]
    x = _counts(profiles, n, "profiles")
    cells, members = _members(nbr_idx, n, cells, include_self)
    return _dense(_sum_rows(members, n, members >= 0, lambda m: m) @ x)


def nbr_profile(
    measured, estimates, heldout_mask, nbr_idx, cells, *, include_self: bool = True
) -> np.ndarray:
    """``X_nbr`` of cells whose microenvironment mixes measured and imputed cells.

    The microenvironment of a held-out cell (itself plus its neighbours) sums
    the *measured* counts of its observed members and the *estimates* of its
    held-out members: the imputation target is scored on what a method would
    actually have to predict, without the truth of other held-out cells.

    Parameters
    ----------
    measured
        ``(n, n_genes)`` measured counts of all cells; rows of held-out cells
        are never read.
    estimates
        Estimated counts of the held-out cells: either ``(n, n_genes)``
        aligned with all cells (only held-out rows are read), or
        ``(n_heldout, n_genes)`` with rows in the order of
        ``np.flatnonzero(heldout_mask)``.
    heldout_mask
        ``(n,)`` bool, True for held-out cells.
    nbr_idx
        ``(n, k)`` neighbour indices, ``-1`` for none (see
        :func:`microenvironment`).
    cells
        Indices of the cells whose ``X_nbr`` is returned (usually the
        held-out test cells).
    include_self
        As in :func:`microenvironment`.

    Returns
    -------
    numpy.ndarray
        ``(n_cells, n_genes)`` microenvironment counts.
    """
    n = np.shape(nbr_idx)[0]
    held = _mask(heldout_mask, n, "heldout_mask")
    x = _counts(measured, n, "measured")
    n_held = int(held.sum())
    e = _matrix(estimates)
    if e.ndim != 2 or e.shape[1] != x.shape[1] or e.shape[0] not in (n, n_held):
        raise ValueError(
            f"estimates must have shape ({n}, {x.shape[1]}) or ({n_held}, {x.shape[1]}), "
            f"got {e.shape}"
        )
    targets = np.flatnonzero(held)
    cells, members = _members(nbr_idx, n, cells, include_self)  # checks nbr_idx and cells
    rows = members[:, 1:] if include_self else members
    a_meas, a_imp = microenv_members(cells, rows, targets, n, include_self=include_self)
    return microenv_sum(x, a_meas, a_imp, _dense(e[held] if e.shape[0] == n else e))
