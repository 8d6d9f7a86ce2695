"""Radius graphs on cell coordinates (CIFM, appendix B.1).

CIFM connects two cells when their distance is at most ``r``: ``A(C)[j, k] = 1
if ||C_j - C_k|| <= r``, with ``r = 20 µm`` for Xenium and Visium-HD (8 µm
bins) and ``150 µm`` for spot-level Visium. When the coordinates' unit is
unknown, :func:`default_radius` derives ``r`` from the median
nearest-neighbour distance ``d`` instead: with a factor of about 2 a cell in
a dense tissue has about 6-12 neighbours, which is what 20 µm gives on Xenium
(cells about 8-12 µm apart).

Graphs are built with :class:`scipy.spatial.cKDTree` (PyG's ``radius_graph``
needs ``torch-cluster``/``pyg-lib``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

__all__ = [
    "radius_graph",
    "radius_adjacency",
    "k_hop",
    "induced_edge_index",
    "default_radius",
    "median_nn_distance",
    "radius_in_units",
    "XENIUM_RADIUS_UM",
    "VISIUM_SPOT_RADIUS_UM",
]

#: Radius used by the paper for Xenium-V1/Prime and Visium-HD, in micrometres.
XENIUM_RADIUS_UM = 20.0
#: Radius used by the paper for spot-level Visium, in micrometres.
VISIUM_SPOT_RADIUS_UM = 150.0


def _check_coords(coords, name: str = "coords") -> np.ndarray:
    arr = np.asarray(coords, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array of shape (n, k), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def radius_graph(coords, radius: float, *, max_neighbours: int | None = None) -> np.ndarray:
    """Undirected radius graph: connect cells at distance ``<= radius``.

    Parameters
    ----------
    coords
        ``(n, k)`` coordinates (any array-like).
    radius
        Positive threshold, in the units of ``coords``; a pair at exactly
        ``radius`` is connected, as in the paper.
    max_neighbours
        Cap on the degree, to bound memory in very dense regions. Each cell
        ranks its neighbours within ``radius`` by distance and keeps the
        nearest ``max_neighbours``; an edge is kept only when *both* ends keep
        it (mutual), so the graph stays undirected and no degree exceeds the
        cap. ``None`` keeps all pairs.

    Returns
    -------
    numpy.ndarray
        ``(2, E)`` int64 edge index holding both directions of each edge, no
        self loops, sorted by source then target. Row 0 is the source, row 1
        the target (PyG convention).
    """
    pts = _check_coords(coords)
    radius = _check_positive(radius, "radius")
    if max_neighbours is not None and (
        isinstance(max_neighbours, bool)
        or not isinstance(max_neighbours, numbers.Integral)
        or max_neighbours < 1
    ):
        raise ValueError(
            f"max_neighbours must be a positive integer or None, got {max_neighbours!r}"
        )
    n = pts.shape[0]
    if n < 2:
        return np.empty((2, 0), dtype=np.int64)
    tree = cKDTree(pts)

    if max_neighbours is None:
        pairs = tree.query_pairs(radius, output_type="ndarray").astype(np.int64)  # i < j
        src = np.concatenate([pairs[:, 0], pairs[:, 1]])
        dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    else:
        k = min(int(max_neighbours) + 1, n)
        # query's upper bound is strict (<); nudge it so distance == radius counts
        bound = np.nextafter(radius, np.inf)
        dist, idx = tree.query(pts, k=k, distance_upper_bound=bound)
        dist = np.asarray(dist).reshape(n, k)
        idx = np.asarray(idx).reshape(n, k)
        rows = np.repeat(np.arange(n), k).reshape(n, k)
        valid = (idx < n) & (idx != rows) & (dist <= radius)
        # keep at most max_neighbours non-self hits per row (self may not be first
        # when cells coincide)
        valid &= np.cumsum(valid, axis=1) <= max_neighbours
        a, b = rows[valid].astype(np.int64), idx[valid].astype(np.int64)
        keys = a * n + b
        mutual = np.isin(keys, b * n + a)
        src, dst = a[mutual], b[mutual]

    order = np.lexsort((dst, src))
    return np.stack([src[order], dst[order]]).astype(np.int64, copy=False)


def median_nn_distance(coords) -> float:
    """Median distance from each cell to its nearest other cell.

    Coincident cells (distance 0) are ignored, so duplicated coordinates do not
    drive the result to 0.

    Parameters
    ----------
    coords
        ``(n, k)`` coordinates, ``n >= 2``.

    Returns
    -------
    float
        The median positive nearest-neighbour distance, in the units of ``coords``.
    """
    pts = _check_coords(coords)
    if pts.shape[0] < 2:
        raise ValueError(f"coords needs at least 2 points, got {pts.shape[0]}")
    tree = cKDTree(pts)
    # a few hits per point, so that coincident cells (distance 0) can be skipped
    dist, _ = tree.query(pts, k=min(pts.shape[0], 8))
    dist = np.where(dist > 0, dist, np.inf)
    nn = dist.min(axis=1)
    nn = nn[np.isfinite(nn)]
    if nn.size == 0:
        raise ValueError("coords: all points coincide; cannot derive a length scale")
    return float(np.median(nn))


def default_radius(coords, *, factor: float = 2.0) -> float:
    """A radius for data whose coordinate unit is unknown.

    Returns ``factor * d`` with ``d`` the median nearest-neighbour distance
    (:func:`median_nn_distance`). The paper uses 20 µm on Xenium, about twice
    the typical cell spacing; ``factor = 2`` gives roughly 6-12 neighbours
    per cell in a densely packed tissue. When the unit is known, prefer
    :func:`radius_in_units` with :data:`XENIUM_RADIUS_UM`.

    Parameters
    ----------
    coords
        ``(n, k)`` coordinates, ``n >= 2``.
    factor
        Positive multiple of the median nearest-neighbour distance.

    Returns
    -------
    float
        The radius in the units of ``coords``.
    """
    factor = _check_positive(factor, "factor")
    return factor * median_nn_distance(coords)


def radius_in_units(radius_um: float, units_per_um: float) -> float:
    """Convert a radius in micrometres to coordinate units.

    Parameters
    ----------
    radius_um
        Radius in micrometres (e.g. :data:`XENIUM_RADIUS_UM`).
    units_per_um
        Coordinate units per micrometre (e.g. ``1 / 0.2125`` for Xenium pixels
        of 0.2125 µm).

    Returns
    -------
    float
        ``radius_um * units_per_um``.
    """
    return _check_positive(radius_um, "radius_um") * _check_positive(units_per_um, "units_per_um")


def radius_adjacency(
    coords,
    radius,
    *,
    groups=None,
    max_neighbours: int | None = None,
) -> sp.csr_matrix:
    """Block-diagonal radius graph of several sections as a sparse adjacency.

    Parameters
    ----------
    coords
        ``(n, k)`` coordinates of all cells.
    radius
        A positive number (same radius everywhere) or a sequence with one
        radius per group id ``0 .. G-1`` (e.g. a radius per section), in the
        units of ``coords``.
    groups
        Optional ``(n,)`` non-negative integer group id (section) of every
        cell; cells of different groups are never connected. ``None`` is one
        group.
    max_neighbours
        Optional degree cap (see :func:`radius_graph`).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n, n)`` symmetric ``float32`` adjacency with ones on edges, no
        diagonal. ``adj[i].indices`` are the neighbours of ``i``.
    """
    pts = _check_coords(coords)
    n = pts.shape[0]
    g = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    if g.shape != (n,) or not np.issubdtype(g.dtype, np.integer) or (n and g.min() < 0):
        raise ValueError(f"groups must be ({n},) non-negative integers, got {g.dtype} of shape {g.shape}")
    ids = np.unique(g)
    if np.ndim(radius) == 0:
        radii = {int(i): _check_positive(radius, "radius") for i in ids}
    else:
        r = list(radius)
        if ids.size and ids.max() >= len(r):
            raise ValueError(f"radius has {len(r)} values but groups go up to {int(ids.max())}")
        radii = {int(i): _check_positive(r[int(i)], f"radius[{int(i)}]") for i in ids}
    src_all, dst_all = [], []
    for i in ids:
        idx = np.flatnonzero(g == i)
        ei = radius_graph(pts[idx], radii[int(i)], max_neighbours=max_neighbours)
        src_all.append(idx[ei[0]])
        dst_all.append(idx[ei[1]])
    src = np.concatenate(src_all) if src_all else np.empty(0, np.int64)
    dst = np.concatenate(dst_all) if dst_all else np.empty(0, np.int64)
    adj = sp.csr_matrix((np.ones(src.size, dtype=np.float32), (src, dst)), shape=(n, n))
    adj.sort_indices()
    return adj


def k_hop(adj: sp.csr_matrix, seeds, hops: int) -> np.ndarray:
    """Cells within ``hops`` edges of ``seeds`` (seeds included).

    Parameters
    ----------
    adj
        ``(n, n)`` CSR adjacency (e.g. :func:`radius_adjacency`).
    seeds
        Integer cell indices.
    hops
        Non-negative number of hops; a message-passing stack of ``L`` layers
        sees exactly the ``L``-hop neighbourhood.

    Returns
    -------
    numpy.ndarray
        Sorted unique int64 indices.
    """
    if isinstance(hops, bool) or not isinstance(hops, numbers.Integral) or hops < 0:
        raise ValueError(f"hops must be a non-negative integer, got {hops!r}")
    n = adj.shape[0]
    seen = np.zeros(n, dtype=bool)
    frontier = np.unique(np.asarray(seeds, dtype=np.int64))
    seen[frontier] = True
    indptr, indices = adj.indptr, adj.indices
    for _ in range(int(hops)):
        if frontier.size == 0:
            break
        starts, ends = indptr[frontier], indptr[frontier + 1]
        lens = ends - starts
        if lens.sum() == 0:
            break
        offs = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        nxt = np.unique(indices[offs])
        nxt = nxt[~seen[nxt]]
        seen[nxt] = True
        frontier = nxt
    return np.flatnonzero(seen).astype(np.int64)


def induced_edge_index(adj: sp.csr_matrix, nodes) -> np.ndarray:
    """Edges of ``adj`` among ``nodes``, re-indexed to ``0 .. len(nodes)-1``.

    Parameters
    ----------
    adj
        ``(n, n)`` CSR adjacency.
    nodes
        Integer cell indices (their order defines the local index).

    Returns
    -------
    numpy.ndarray
        ``(2, E)`` int64 local edge index (source row 0, target row 1), both
        directions of every edge, as in :func:`radius_graph`.
    """
    nodes = np.asarray(nodes, dtype=np.int64)
    sub = adj[nodes][:, nodes].tocoo()
    return np.stack([sub.row.astype(np.int64), sub.col.astype(np.int64)])
