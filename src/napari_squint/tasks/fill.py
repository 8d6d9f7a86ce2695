"""Fill an empty region (a tear, an unimaged area) with new cells to impute.

New cells are placed at the local density of the surrounding tissue, then
linked into the section's graph exactly as :func:`~napari_squint.data.prepare.prepare_slide`
links measured cells (symmetrised kNN, relative-distance covariates in the
section's median-NN unit), so the model sees them as ordinary masked cells.

Placement (:func:`place_cells`):

1. **Density.** ``lambda`` = cells per unit area in a band around the
   polygon (``band`` median-NN distances wide, clipped to the section's
   convex hull, so a polygon on the tissue edge is not diluted by empty
   space).
2. **Lattice.** A hexagonal lattice with the spacing that gives that density,
   ``s = sqrt(2 / (sqrt(3) * lambda))``, with a random (seeded) offset.
3. **Jitter.** Each point moves uniformly within a disc of radius ``a * s``;
   ``a`` is chosen (by a seeded simulation, cached) so the lattice's median
   nearest-neighbour distance matches that of the surrounding cells. Real
   tissue is far less regular than a lattice: in the MERFISH hypothalamus,
   a hexagonal lattice at the median-NN spacing would hold about three times
   too many cells, so density and spacing are matched separately.
4. Points outside the polygon, or closer than half a median-NN distance to a
   measured cell, are dropped. A polygon too small to hold a lattice point
   gets one cell at its representative point.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.spatial import cKDTree

from napari_squint.data.covariates import rbf_covariates
from napari_squint.data.graph import knn, padded_neighbours, symmetric_adjacency
from napari_squint.data.validate import SlideError

__all__ = ["created_graph", "local_density", "place_cells"]

_HEX_NN = np.sqrt(2 / np.sqrt(3))  #: median NN distance x sqrt(density) of a perfect hexagonal lattice


def local_density(polygon, xy: np.ndarray, *, band: float = 6.0) -> tuple[float, float]:
    """Cells per unit area and median nearest-neighbour distance around a polygon.

    Parameters
    ----------
    polygon
        shapely Polygon (slide coordinates).
    xy
        (n, 2) coordinates of the measured cells of the polygon's section.
    band
        Width of the surrounding band, in median-NN distances of the section.

    Returns
    -------
    density, nn
        Cells per unit area in the band (clipped to the section's convex hull)
        and the median distance from a band cell to its nearest neighbour.
    """
    import shapely
    from shapely.geometry import MultiPoint

    if xy.shape[0] < 3:
        raise SlideError(f"the section holds {xy.shape[0]} cells; at least 3 are needed to estimate its density")
    tree = cKDTree(xy)
    d, _ = tree.query(xy, k=2)
    med = float(np.median(d[:, 1])) or float(np.mean(d[:, 1])) or 1.0
    hull = MultiPoint(xy).convex_hull
    for width in (band, 2 * band, 4 * band):  # widen the band until it holds enough cells
        ring = polygon.buffer(width * med).difference(polygon)
        if hull.geom_type == "Polygon":
            ring = ring.intersection(hull)
        inside = shapely.contains_xy(ring, xy[:, 0], xy[:, 1]) if ring.area > 0 else np.zeros(len(xy), bool)
        if inside.sum() >= 10:
            break
    if inside.sum() < 3:
        # polygon far from tissue or tiny section: fall back to the whole section
        area = hull.area if hull.area > 0 else (np.ptp(xy[:, 0]) * np.ptp(xy[:, 1]) or 1.0)
        return float(xy.shape[0] / area), med
    return float(inside.sum() / ring.area), float(np.median(d[inside, 1]))


@lru_cache(maxsize=1)
def _jitter_table(n_side: int = 48, seed: int = 12345) -> tuple[np.ndarray, np.ndarray]:
    """Median NN distance x sqrt(density) of a jittered hexagonal lattice, by jitter amplitude."""
    rng = np.random.default_rng(seed)
    amps = np.linspace(0.0, 0.9, 19)
    ii, jj = np.meshgrid(np.arange(n_side), np.arange(n_side))
    base = np.c_[(ii + 0.5 * (jj % 2)).ravel(), (jj * np.sqrt(3) / 2).ravel()]
    interior = ((ii > 3) & (ii < n_side - 4) & (jj > 3) & (jj < n_side - 4)).ravel()
    out = []
    for a in amps:
        p = base + _disc(rng, base.shape[0]) * a
        d, _ = cKDTree(p).query(p[interior], k=2)
        out.append(np.median(d[:, 1]) * _HEX_NN)  # spacing 1 <-> density 2/sqrt(3)
    return amps, np.minimum.accumulate(np.asarray(out))  # monotone against simulation noise


def _disc(rng: np.random.Generator, n: int) -> np.ndarray:
    ang = rng.uniform(0, 2 * np.pi, n)
    r = np.sqrt(rng.uniform(0, 1, n))
    return np.c_[np.cos(ang), np.sin(ang)] * r[:, None]


def jitter_for(nn_times_sqrt_density: float) -> float:
    """Jitter amplitude (in lattice spacings) giving a target ``median NN x sqrt(density)``."""
    amps, ratio = _jitter_table()
    # ratio decreases with the amplitude: interpolate on the reversed arrays
    target = float(np.clip(nn_times_sqrt_density, ratio.min(), ratio.max()))
    return float(np.interp(target, ratio[::-1], amps[::-1]))


def place_cells(polygon, xy: np.ndarray, *, seed: int = 0, band: float = 6.0,
                min_gap: float = 0.5) -> np.ndarray:
    """New cell positions filling ``polygon`` at the density of the surrounding tissue.

    Parameters
    ----------
    polygon
        shapely Polygon holding no measured cell.
    xy
        (n, 2) measured cells of the polygon's section.
    seed
        Seed of the lattice offset and jitter.
    band
        Width of the band that sets the density, in median-NN distances.
    min_gap
        New cells closer than ``min_gap`` median-NN distances to a measured
        cell are dropped.

    Returns
    -------
    numpy.ndarray
        (m, 2) float64 coordinates, m >= 1.
    """
    import shapely

    xy = np.asarray(xy, dtype=np.float64)[:, :2]
    density, nn = local_density(polygon, xy, band=band)
    spacing = float(np.sqrt(2 / (np.sqrt(3) * density)))
    amp = jitter_for(nn * np.sqrt(density))
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = polygon.bounds
    pad = 2 * spacing
    nx = int(np.ceil((x1 - x0 + 2 * pad) / spacing)) + 1
    ny = int(np.ceil((y1 - y0 + 2 * pad) / (spacing * np.sqrt(3) / 2))) + 1
    if nx * ny > 5_000_000:
        raise SlideError(f"the polygon (bounds {polygon.bounds}) would need {nx * ny} lattice points at the local "
                         f"density; draw a smaller region")
    ii, jj = np.meshgrid(np.arange(nx), np.arange(ny))
    off = rng.uniform(0, spacing, 2)
    pts = np.c_[(x0 - pad + off[0] + (ii + 0.5 * (jj % 2)) * spacing).ravel(),
                (y0 - pad + off[1] + jj * spacing * np.sqrt(3) / 2).ravel()]
    pts = pts + _disc(rng, pts.shape[0]) * amp * spacing
    pts = pts[shapely.contains_xy(polygon, pts[:, 0], pts[:, 1])]
    if pts.size:
        d, _ = cKDTree(xy).query(pts, k=1)
        pts = pts[d >= min_gap * nn]
    if pts.shape[0] == 0:
        p = polygon.representative_point()
        pts = np.array([[p.x, p.y]])
    return pts


def created_graph(
    xy_section: np.ndarray,
    idx_section: np.ndarray,
    new_xy: np.ndarray,
    *,
    first_new: int,
    k: int,
    max_degree: int,
    scale: float,
    n_rbf: int,
    rbf_max: float,
    radius: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Link new cells into their section's graph, as ``prepare_slide`` would.

    The kNN graph is rebuilt locally on the new cells plus the measured cells
    within ``radius`` of them (default ``4 k`` median-NN distances, far beyond
    any kNN distance), symmetrised, and padded; only the rows of the new cells
    are returned.

    Parameters
    ----------
    xy_section, idx_section
        (n_s, 2) coordinates and global indices of the section's measured cells.
    new_xy
        (c, 2) coordinates of the new cells.
    first_new
        Global index given to the first new cell (new cell j is ``first_new + j``).
    k, max_degree, n_rbf, rbf_max
        The model's :class:`~napari_squint.data.prepare.GraphConfig`.
    scale
        The section's median nearest-neighbour distance (unit of the covariates).

    Returns
    -------
    nbr, cond
        (c, max_degree) neighbour table in global indices (``-1`` padding) and
        (c, n_rbf) relative-distance covariates of the new cells.
    """
    new_xy = np.asarray(new_xy, dtype=np.float64)
    c = new_xy.shape[0]
    radius = 4 * k * scale if radius is None else radius
    near = np.unique(np.concatenate(cKDTree(xy_section).query_ball_point(new_xy, r=radius))).astype(np.int64) \
        if xy_section.shape[0] else np.zeros(0, np.int64)
    loc_xy = np.concatenate([new_xy, xy_section[near]])
    glob = np.concatenate([first_new + np.arange(c), idx_section[near]])
    kk = min(k, loc_xy.shape[0] - 1)
    if kk < 1:
        raise SlideError("a filled region needs at least one other cell nearby to link its new cells to")
    idx, dist = knn(loc_xy, kk)  # the same kNN (self excluded) as prepare_slide's graph
    local_nbr = padded_neighbours(symmetric_adjacency(idx, dist), max_degree)[:c]
    nbr = np.where(local_nbr >= 0, glob[np.maximum(local_nbr, 0)], -1)
    if kk < k:  # pad the distances so the covariates keep their meaning
        dist = np.pad(dist, ((0, 0), (0, k - kk)), mode="edge")
    cond = rbf_covariates(dist[:c], scale, n_rbf=n_rbf, max_dist=rbf_max)
    return nbr.astype(np.int64), cond
