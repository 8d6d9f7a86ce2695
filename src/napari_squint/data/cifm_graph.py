"""CIFM's graph: expression, unit-free coordinates, a radius graph per section and spatial tiles.

Coordinates enter the model in units of each section's median
nearest-neighbour distance, so a model is unit-free (a slide in pixels and one
in micrometres give the same inputs); the radius graph is built in slide units
(``radius``) or, by default, at ``radius_factor`` median nearest-neighbour
distances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from napari_squint.data.prepare import PreparedSlide
from napari_squint.data.radius import median_nn_distance, radius_adjacency
from napari_squint.data.tiles import grid_tiles

if TYPE_CHECKING:
    from napari_squint.config import CifmConfig

__all__ = ["CifmGraph", "build_graph", "graph_from_prepared"]


@dataclass
class CifmGraph:
    """The arrays CIFM runs on: expression, model coordinates, radius graph, tiles.

    Attributes
    ----------
    x_in
        ``(n, g)`` CSR normalised log expression (log1p of counts per 10^4).
    coords
        ``(n, 2)`` float64 coordinates in model units (slide units divided by
        the section's median nearest-neighbour distance).
    adj
        ``(n, n)`` CSR block-diagonal radius graph (sections never connected).
    section
        ``(n,)`` int64 section id.
    tile
        ``(n,)`` int64 spatial tile id (unique across sections).
    radius
        ``(n_sections,)`` radius of each section, in slide units.
    """

    x_in: sp.csr_matrix
    coords: np.ndarray
    adj: sp.csr_matrix
    section: np.ndarray
    tile: np.ndarray
    radius: np.ndarray

    @property
    def n_cells(self) -> int:
        return self.x_in.shape[0]

    def mean_degree(self) -> float:
        return float(self.adj.nnz / max(self.n_cells, 1))


def build_graph(
    x_in,
    coords: np.ndarray,
    section: np.ndarray,
    cfg: CifmConfig,
    *,
    tile: np.ndarray | None = None,
    scales: dict[int, float] | None = None,
) -> CifmGraph:
    """Build a :class:`CifmGraph` from expression, slide coordinates and section ids.

    Parameters
    ----------
    x_in
        ``(n, g)`` normalised log expression (dense or sparse).
    coords
        ``(n, 2)`` coordinates in slide units.
    section
        ``(n,)`` integer section ids (graphs never cross them).
    cfg
        Radius options (``radius``, ``radius_factor``, ``max_neighbours``, ``tile_cells``).
    tile
        Optional ``(n,)`` tile ids; computed on a grid otherwise.
    scales
        Optional median nearest-neighbour distance of each section id; derived
        from ``coords`` otherwise.

    Returns
    -------
    CifmGraph
    """
    coords = np.asarray(coords, dtype=np.float64)
    section = np.asarray(section, dtype=np.int64)
    n = coords.shape[0]
    if section.shape != (n,):
        raise ValueError(f"section must have shape ({n},), got {section.shape}")
    n_sec = int(section.max()) + 1 if n else 0
    model_xy = np.zeros_like(coords)
    radius = np.ones(max(n_sec, 1))
    tiles = np.zeros(n, dtype=np.int64) if tile is None else np.asarray(tile, dtype=np.int64)
    offset = 0
    for s in range(n_sec):
        idx = np.flatnonzero(section == s)
        if idx.size == 0:
            continue
        xy = coords[idx]
        scale = float(scales[s]) if scales is not None and s in scales else (
            median_nn_distance(xy) if xy.shape[0] >= 2 else 1.0)
        radius[s] = float(cfg.radius) if cfg.radius is not None else cfg.radius_factor * scale
        model_xy[idx] = (xy - xy.mean(0)) / scale
        if tile is None:
            t = grid_tiles(xy, cfg.tile_cells)
            tiles[idx] = t + offset
            offset += int(t.max()) + 1
    adj = radius_adjacency(coords, radius, groups=section, max_neighbours=cfg.max_neighbours)
    x = sp.csr_matrix(x_in, dtype=np.float32)
    return CifmGraph(x_in=x, coords=model_xy, adj=adj, section=section, tile=tiles, radius=radius)


def graph_from_prepared(data: PreparedSlide, cfg: CifmConfig, *, extra_coords: np.ndarray | None = None,
                        extra_batch: np.ndarray | None = None) -> CifmGraph:
    """:func:`build_graph` on a :class:`PreparedSlide` (its ``x_in``, ``batch``, ``tile``, section scales).

    ``extra_coords`` ``(c, 2)`` and ``extra_batch`` ``(c,)`` add new cells
    (zero expression, numbered after the slide's) to the radius graph of their
    section; tiles are then recomputed on the grid.
    """
    x, coords, batch, tile = data.x_in, data.coords, data.batch, data.tile
    if extra_coords is not None and len(extra_coords):
        batch = np.concatenate([batch, np.asarray(extra_batch, dtype=np.int64)])
        coords = np.vstack([coords, np.asarray(extra_coords, dtype=np.float64)])
        x = sp.vstack([x, sp.csr_matrix((len(extra_coords), data.n_genes), dtype=np.float32)]).tocsr()
        tile = None
    uniq, section = np.unique(batch, return_inverse=True)
    names = list(data.sections)
    scales = {i: float(data.scales[names[int(b)]]) for i, b in enumerate(uniq)
              if int(b) < len(names) and names[int(b)] in data.scales}
    return build_graph(x, coords, section, cfg, tile=tile, scales=scales)
