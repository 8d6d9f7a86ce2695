"""The honest in-painting protocol: choose held-out sites, train without them.

SQuINT's task A (paper section 5.1, appendix C.4) holds out three contiguous
patches of one section, trains on every other cell, and imputes the patches.
This module chooses the sites (seeded), turns patches into GeoJSON-ready
polygons, and trains a model that never sees the held-out cells.

* :func:`choose_patches` - ``n_patches`` non-overlapping discs of about
  ``fraction`` of a section's cells each (the ``k`` nearest cells of a random
  centre), at least one patch diameter apart and away from the tissue edge.
* :func:`choose_random_cells` - the same number of cells drawn uniformly from
  the section (appendix C.4's "random cells" setting, an easier task: every
  held-out cell keeps measured neighbours).
* :func:`choose_sites` - either of the two, by name.
* :func:`patch_regions` - one circular :class:`~napari_squint.io.geojson.Region`
  per patch that contains exactly the patch's cells (GeoJSON round trip).
* :func:`train_heldout` - ``Squint(adata, holdout=mask)`` trained; held-out
  cells are removed *before* the graph is built, so they are absent from every
  input, neighbourhood and loss.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.data.validate import SlideError

__all__ = [
    "SITES",
    "choose_patches",
    "choose_random_cells",
    "choose_sites",
    "mark_heldout",
    "patch_regions",
    "train_heldout",
]

#: names accepted by :func:`choose_sites`
SITES = ("patches", "random")


def _section_cells(adata: AnnData, section: str | None, section_key: str | None) -> tuple[np.ndarray, str | None]:
    """Indices of the cells of ``section`` (all cells when the slide has one section)."""
    if section_key is None or section_key not in adata.obs:
        if section is not None and section_key is not None:
            raise SlideError(f"section key {section_key!r} not found in adata.obs (columns: {list(adata.obs.columns)})")
        return np.arange(adata.n_obs), None
    sec = adata.obs[section_key].astype(str).to_numpy()
    names = list(pd.unique(sec))
    if section is None:
        counts = pd.Series(sec).value_counts()
        section = str(counts.index[0])  # the largest section
    section = str(section)
    if section not in names:
        raise SlideError(f"section {section!r} is not in adata.obs[{section_key!r}] (sections: {sorted(names)[:12]})")
    return np.flatnonzero(sec == section), section


def _coords(adata: AnnData, spatial_key: str) -> np.ndarray:
    if spatial_key not in adata.obsm:
        raise SlideError(f"spatial key {spatial_key!r} not found in adata.obsm (keys: {list(adata.obsm)})")
    arr = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
    # the engine's columns (data.validate.check_coordinates): x, y and an optional z
    return arr[:, :3] if arr.ndim == 2 and arr.shape[1] >= 3 else arr[:, :2]


def _hull_inset(xy: np.ndarray) -> np.ndarray:
    """Distance of every point to the boundary of the points' convex hull (inf when the hull is flat).

    A plane uses shapely's polygon; a volume uses qhull's facets (the distance from an inside point to a convex
    hull's boundary is its distance to the nearest facet plane). A constant third column is a plane.
    """
    import shapely
    from shapely.geometry import MultiPoint

    if xy.shape[1] > 2 and np.ptp(xy[:, 2:], axis=0).max() > 0:
        from scipy.spatial import ConvexHull, QhullError

        try:
            eq = ConvexHull(xy).equations  # unit outward normals n and offsets b: n.x + b <= 0 inside
        except QhullError:  # the cells lie in a plane or a line
            return np.full(xy.shape[0], np.inf)
        return np.maximum(-(xy @ eq[:, :-1].T + eq[:, -1]).max(1), 0.0)
    hull = MultiPoint(xy[:, :2]).convex_hull
    if hull.geom_type != "Polygon":
        return np.full(xy.shape[0], np.inf)
    return shapely.distance(hull.exterior, shapely.points(xy[:, 0], xy[:, 1]))


def _edge_distance(xy: np.ndarray, tree, m: int) -> np.ndarray:
    """Distance of every cell to the edge a patch of ``m`` cells must keep away from.

    The edge is the convex hull's boundary. A volume thinner than a patch's ball (a slab: the depth is under the
    ball's diameter, typical of a cut block) cannot hold a ball away from its top and bottom faces, so there
    the edge is the (x, y) hull's: the patch runs through the depth, as a plane's disc does through a section.
    """
    inset = _hull_inset(xy)
    if xy.shape[1] < 3 or not np.ptp(xy[:, 2]) > 0:
        return inset
    probe = xy[np.linspace(0, xy.shape[0] - 1, num=min(64, xy.shape[0])).astype(np.int64)]
    r = float(np.median(np.asarray(tree.query(probe, k=m)[0]).reshape(len(probe), -1)[:, -1]))  # a patch's radius
    if np.ptp(xy[:, 2]) < 2 * r:
        return _hull_inset(xy[:, :2])
    return inset


def choose_patches(
    adata: AnnData,
    *,
    section: str | None = None,
    n_patches: int = 3,
    fraction: float = 0.03,
    seed: int = 0,
    section_key: str | None = K.SECTION_KEY,
    spatial_key: str = K.SPATIAL_KEY,
    gap: float = 1.0,
    max_tries: int = 2000,
) -> np.ndarray:
    """Choose ``n_patches`` contiguous, non-overlapping held-out patches in one section.

    Each patch is the ``m = round(fraction * n_section)`` cells nearest to a
    random centre cell, i.e. a disc of radius ``r`` (the distance to the m-th
    cell); with (x, y, z) coordinates, a ball (in a slab thinner than the
    ball, the ball is cut by the slab's faces and the edge rule uses the
    (x, y) hull). Centres are drawn (seeded) among cells at least ``r`` inside the
    convex hull of the section, so a patch is surrounded by tissue, and at
    least ``(2 + gap) * r`` from the other centres, so patches are separated by
    ``gap`` radii of observed cells.

    Parameters
    ----------
    adata
        Slide; ``obsm[spatial_key]`` (n, 2) or (n, 3) coordinates.
    section
        Section holding the patches (default: the largest one).
    n_patches
        Number of patches.
    fraction
        Cells per patch as a fraction of the section's cells (paper: ~3%).
    seed
        Seed of the centre draws.
    gap
        Minimum ring of observed cells between two patches, in patch radii.
    max_tries
        Centre draws before giving up.

    Returns
    -------
    numpy.ndarray
        (n,) int64 patch label of every cell: ``-1`` outside the patches,
        ``0 .. n_patches-1`` inside.

    Raises
    ------
    SlideError
        Unknown section, bad ``fraction``, or patches that cannot be placed.
    """
    from scipy.spatial import cKDTree

    if not 0 < fraction < 1:
        raise SlideError(f"fraction={fraction!r} must be in (0, 1)")
    if n_patches < 1:
        raise SlideError(f"n_patches={n_patches!r} must be at least 1")
    if n_patches * fraction >= 0.5:
        raise SlideError(f"n_patches * fraction = {n_patches * fraction:.2f} would hold out half the section or more")
    idx, section = _section_cells(adata, section, section_key)
    xy = _coords(adata, spatial_key)[idx]
    m = max(1, int(round(fraction * idx.size)))
    tree = cKDTree(xy)
    inset = _edge_distance(xy, tree, m)  # distance of every cell to the tissue's edge
    rng = np.random.default_rng(seed)
    labels = np.full(adata.n_obs, -1, dtype=np.int64)
    centres: list[np.ndarray] = []
    radii: list[float] = []
    taken = np.zeros(idx.size, dtype=bool)
    tries = 0
    while len(centres) < n_patches:
        tries += 1
        if tries > max_tries:
            raise SlideError(f"could not place {n_patches} non-overlapping patches of {m} cells in section "
                             f"{section!r} after {max_tries} tries; lower n_patches, fraction or gap")
        c = int(rng.integers(idx.size))
        dist, members = tree.query(xy[c], k=m)
        members = np.atleast_1d(members)
        r = float(np.max(np.atleast_1d(dist)))
        if inset[c] < r and tries < max_tries // 2:  # relax the edge rule if it cannot be met
            continue
        if any(np.linalg.norm(xy[c] - c0) < (2 + gap) * max(r, r0) for c0, r0 in zip(centres, radii)):
            continue
        if taken[members].any():
            continue
        taken[members] = True
        labels[idx[members]] = len(centres)
        centres.append(xy[c])
        radii.append(r)
    return labels


def choose_random_cells(
    adata: AnnData,
    *,
    section: str | None = None,
    fraction: float = 0.09,
    seed: int = 0,
    section_key: str | None = K.SECTION_KEY,
    spatial_key: str = K.SPATIAL_KEY,
) -> np.ndarray:
    """Hold out ``fraction`` of one section's cells drawn uniformly at random (appendix C.4).

    Returns
    -------
    numpy.ndarray
        (n,) int64 labels: ``0`` for held-out cells, ``-1`` otherwise (same
        convention as :func:`choose_patches`, one "site").
    """
    if not 0 < fraction < 0.5:
        raise SlideError(f"fraction={fraction!r} must be in (0, 0.5)")
    _coords(adata, spatial_key)
    idx, _ = _section_cells(adata, section, section_key)
    m = max(1, int(round(fraction * idx.size)))
    rng = np.random.default_rng(seed)
    labels = np.full(adata.n_obs, -1, dtype=np.int64)
    labels[rng.choice(idx, size=m, replace=False)] = 0
    return labels


def choose_sites(
    adata: AnnData,
    *,
    sites: str = "patches",
    section: str | None = None,
    n_patches: int = 3,
    fraction: float = 0.03,
    seed: int = 0,
    section_key: str | None = K.SECTION_KEY,
    spatial_key: str = K.SPATIAL_KEY,
) -> np.ndarray:
    """Held-out sites by name: ``"patches"`` or ``"random"`` (as many cells as the patches).

    Returns the (n,) int64 site labels of :func:`choose_patches` (``-1`` = training cell).
    """
    if sites == "patches":
        return choose_patches(adata, section=section, n_patches=n_patches, fraction=fraction, seed=seed,
                              section_key=section_key, spatial_key=spatial_key)
    if sites == "random":
        return choose_random_cells(adata, section=section, fraction=n_patches * fraction, seed=seed,
                                   section_key=section_key, spatial_key=spatial_key)
    raise SlideError(f"sites={sites!r}: expected one of {SITES}")


def patch_regions(
    adata: AnnData,
    labels: np.ndarray,
    *,
    section_key: str | None = K.SECTION_KEY,
    spatial_key: str = K.SPATIAL_KEY,
    resolution: int = 64,
) -> list:
    """One circular polygon per patch containing exactly that patch's cells.

    The circle is centred on the member cell that leaves the widest margin
    between the farthest member and the nearest non-member of the section
    (a :func:`choose_patches` patch is a disc around one of its cells), with a
    radius halfway between the two, so ``cells_in_regions`` on the result
    gives back the patch (an exact GeoJSON round trip whenever such a circle
    exists).

    Returns
    -------
    list of :class:`~napari_squint.io.geojson.Region`, named ``patch_<i>``.
    """
    from shapely.geometry import Point

    from napari_squint.io.geojson import Region

    labels = np.asarray(labels)
    if labels.shape != (adata.n_obs,):
        raise SlideError(f"labels has shape {labels.shape}; expected ({adata.n_obs},)")
    xy = _coords(adata, spatial_key)[:, :2]  # GeoJSON regions are planar: a 3D ball becomes its (x, y) circle
    sec = adata.obs[section_key].astype(str).to_numpy() if section_key and section_key in adata.obs else None
    regions = []
    for p in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == p)
        section = None if sec is None else str(sec[members[0]])
        others = np.flatnonzero((labels != p) & ((sec == section) if sec is not None else True))
        # patches from choose_patches are discs of nearest cells around a cell: try each member as
        # the centre (cheap: patches are small) and keep the one with the widest margin
        best = None
        cand = members if members.size <= 400 else members[:: max(1, members.size // 400)]
        for c in cand:
            r_in = np.linalg.norm(xy[members] - xy[c], axis=1).max()
            r_out = np.linalg.norm(xy[others] - xy[c], axis=1).min() if others.size else r_in * 2 + 1
            margin = r_out - r_in
            if best is None or margin > best[0]:
                best = (margin, c, r_in, r_out)
        _, c, r_in, r_out = best
        radius = (r_in + r_out) / 2 if r_out > r_in else r_in * 1.0001
        poly = Point(xy[c]).buffer(radius, quad_segs=resolution)
        regions.append(Region(section=section, polygon=poly, name=f"patch_{int(p)}"))
    return regions


def mark_heldout(adata: AnnData, mask: np.ndarray, *, key_added: str = K.HELDOUT_KEY, copy: bool = False):
    """Write the held-out mask to ``obs[key_added]`` (bool) and its size to ``uns['squint']['holdout']``."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (adata.n_obs,):
        raise SlideError(f"mask has shape {mask.shape}; expected ({adata.n_obs},)")
    target = adata.copy() if copy else adata
    target.obs[key_added] = mask
    target.uns.setdefault(K.UNS_KEY, {})["holdout"] = {"params": {"key_added": key_added},
                                                       "n_heldout": int(mask.sum())}
    return target if copy else None


def train_heldout(
    adata: AnnData,
    holdout: np.ndarray,
    *,
    section_key: str | None = K.SECTION_KEY,
    spatial_key: str = K.SPATIAL_KEY,
    genes="all",
    callback: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    **options,
):
    """Train SQuINT on every cell except the held-out ones.

    The held-out cells are dropped from the slide before the graph, the
    inputs, the targets and the gene selection are built
    (``Squint(adata, holdout=mask)``): they never enter an input, a
    neighbourhood sum or a loss, and the graph is rebuilt without them, so
    their observed neighbours are linked to other observed cells instead.

    Returns
    -------
    napari_squint.api.squint.Squint
        The trained model (``model.data.obs_names`` excludes the held-out cells).
    """
    from napari_squint.api.squint import Squint

    holdout = np.asarray(holdout, dtype=bool)
    model = Squint(adata, section_key=section_key, spatial_key=spatial_key, genes=genes, holdout=holdout, **options)
    model.train(callback=callback, should_stop=should_stop)
    return model
