"""Cells as napari layers: one layer per section, laid out side by side or one at a time.

Coordinates: a cell at slide position (x, y) is drawn at napari world position
(row, col) = (y + dy, x + dx), where (dy, dx) is its section's offset in the
layout. Layers keep slide coordinates in their data and carry the offset as
``translate``, so a polygon drawn on the canvas maps back to its section and
slide coordinates exactly (:func:`shapes_to_regions`).

Representation: up to :data:`POINTS_LIMIT` cells a section is a Points layer
(one marker per cell). Above it, napari's marker rendering becomes too slow to
stay usable (measured in ``benchmarks/napari_render.py``), so each section is
drawn as an RGBA image raster with one pixel per cell instead; the layer name
says so, clicking still picks the nearest cell, and recolouring rewrites the
raster. This module builds layer data tuples and reads layers; it imports no Qt.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_squint import _constants as K
from napari_squint._napari.session import ADATA_META, CELLS_META, SESSION_META, SOURCE_META, section_labels

#: total cells above which sections are drawn as image rasters (override with the env var below)
POINTS_LIMIT = 250_000
POINTS_LIMIT_ENV = "NAPARI_SQUINT_POINTS_LIMIT"
#: colour of cells before anything is computed
BASE_COLOUR = np.array([0.62, 0.72, 0.85, 1.0], dtype=np.float32)

LAYOUTS = ("side", "single")


def points_limit() -> int:
    value = os.environ.get(POINTS_LIMIT_ENV)
    return int(value) if value else POINTS_LIMIT


@dataclass
class SectionGeometry:
    """Where one section's cells are and where they are drawn."""

    name: str
    cells: np.ndarray  #: (m,) row indices into the AnnData
    bounds: tuple[float, float, float, float]  #: xmin, ymin, xmax, ymax in slide units
    offset: tuple[float, float]  #: (dy, dx) added to slide (y, x) to get world (row, col)
    spacing: float  #: median nearest-neighbour distance


def _spacing(xy: np.ndarray) -> float:
    if xy.shape[0] < 2:
        return 1.0
    from scipy.spatial import cKDTree

    sample = xy if xy.shape[0] <= 20000 else xy[np.random.default_rng(0).choice(xy.shape[0], 20000, replace=False)]
    d, _ = cKDTree(xy).query(sample, k=2)
    s = float(np.median(d[:, 1]))
    return s if s > 0 else 1.0


def section_geometry(adata, *, section_key: str | None, spatial_key: str = K.SPATIAL_KEY, layout: str = "side",
                     gap: float = 0.08) -> list[SectionGeometry]:
    """Each section's cells, extent and offset in the layout.

    ``layout="side"`` places sections on a grid of ``ceil(sqrt(S))`` columns,
    each centred in a cell as large as the largest section plus ``gap``;
    ``"single"`` keeps every section at its own coordinates (shown one at a time).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if spatial_key not in adata.obsm:
        raise KeyError(f"coordinates key {spatial_key!r} not in obsm (available: {list(adata.obsm)})")
    xy = np.asarray(adata.obsm[spatial_key], dtype=np.float64)[:, :2]
    labels = section_labels(adata, section_key)
    names = list(pd.unique(labels))
    out = []
    for name in names:
        cells = np.flatnonzero(labels == name)
        p = xy[cells]
        lo, hi = p.min(0), p.max(0)
        out.append(SectionGeometry(str(name), cells, (lo[0], lo[1], hi[0], hi[1]), (0.0, 0.0), _spacing(p)))
    if layout == "side" and len(out) > 1:
        w = max(g.bounds[2] - g.bounds[0] for g in out) * (1 + gap)
        h = max(g.bounds[3] - g.bounds[1] for g in out) * (1 + gap)
        ncol = math.ceil(math.sqrt(len(out)))
        for i, g in enumerate(out):
            r, c = divmod(i, ncol)
            cx = c * w + w / 2 - (g.bounds[0] + g.bounds[2]) / 2
            cy = r * h + h / 2 - (g.bounds[1] + g.bounds[3]) / 2
            g.offset = (cy, cx)
    return out


def layer_name(section: str, *, raster: bool = False) -> str:
    """``"cells · <section>"``, with `` (raster)`` for the image representation."""
    return f"cells · {section}" + (" (raster)" if raster else "")


def cell_layer_data(adata, *, section_key: str | None, spatial_key: str = K.SPATIAL_KEY, layout: str = "side",
                    colours: np.ndarray | None = None, session_id: int | None = None, source: dict | None = None,
                    show_section: str | None = None, raster: bool | None = None) -> list[tuple]:
    """napari layer data tuples, one per section.

    Parameters
    ----------
    adata
        The slide.
    colours
        (n, 4) RGBA per cell (default a uniform light blue).
    show_section
        In the ``"single"`` layout, the section shown (default the first);
        the others are added hidden.
    raster
        Force (True) or forbid (False) the image representation; by default
        it is used above :func:`points_limit` cells.

    Returns
    -------
    list of ``(data, kwargs, "points" | "image")``; every layer's metadata holds
    the AnnData (``squint_adata``), its cells, section and offset (``squint_cells``).
    """
    geoms = section_geometry(adata, section_key=section_key, spatial_key=spatial_key, layout=layout)
    xy = np.asarray(adata.obsm[spatial_key], dtype=np.float64)[:, :2]
    if colours is None:
        colours = np.broadcast_to(BASE_COLOUR, (adata.n_obs, 4))
    if raster is None:
        raster = adata.n_obs > points_limit()
    if show_section is None and geoms:
        show_section = geoms[0].name
    out = []
    for g in geoms:
        meta = {
            ADATA_META: adata,
            SOURCE_META: dict(source or {}),
            SESSION_META: session_id,
            CELLS_META: {"cells": g.cells, "section": g.name, "offset": g.offset, "spacing": g.spacing,
                         "bounds": g.bounds, "section_key": section_key, "spatial_key": spatial_key,
                         "layout": layout, "raster": bool(raster)},
        }
        visible = layout == "side" or g.name == show_section
        if raster:
            out.append(_raster_tuple(xy[g.cells], np.asarray(colours)[g.cells], g, meta, visible))
            continue
        data = xy[g.cells][:, ::-1].astype(np.float32)
        face = np.ascontiguousarray(np.asarray(colours, dtype=np.float32)[g.cells])
        kwargs = {
            "name": layer_name(g.name),
            "size": 0.9 * g.spacing,
            "face_color": face,
            # napari draws the border of markers smaller than ~2 screen pixels even at width 0:
            # give it the face colour, or a zoomed-out slide looks grey
            "border_color": face,
            "border_width": 0,
            "translate": g.offset,
            "metadata": meta,
            "visible": visible,
            "features": pd.DataFrame({"cell": adata.obs_names[g.cells].astype(str)}),
            "antialiasing": 0.5 if adata.n_obs <= 100_000 else 0.0,
        }
        out.append((data, kwargs, "points"))
    return out


def _raster_tuple(xy: np.ndarray, rgba: np.ndarray, g: SectionGeometry, meta: dict, visible: bool):
    px = 0.75 * g.spacing
    x0, y0 = g.bounds[0], g.bounds[1]
    rows = np.round((xy[:, 1] - y0) / px).astype(np.int64)
    cols = np.round((xy[:, 0] - x0) / px).astype(np.int64)
    shape = (int(rows.max()) + 1, int(cols.max()) + 1)
    index = np.full(shape, -1, dtype=np.int32)
    index[rows, cols] = np.arange(xy.shape[0], dtype=np.int32)
    meta[CELLS_META].update(rows=rows, cols=cols, index=index, pixel=px)
    img = _rasterise(rgba, rows, cols, shape)
    kwargs = {"name": layer_name(g.name, raster=True), "rgb": True, "scale": (px, px),
              "translate": (y0 + g.offset[0], x0 + g.offset[1]), "metadata": meta, "visible": visible,
              "interpolation2d": "nearest"}
    return img, kwargs, "image"


def _rasterise(rgba: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    img = np.zeros((*shape, 4), dtype=np.uint8)
    img[rows, cols] = np.clip(np.asarray(rgba) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return img


# ------------------------------------------------------------------ layers in a viewer
def is_cell_layer(layer) -> bool:
    return CELLS_META in getattr(layer, "metadata", {}) and ADATA_META in layer.metadata


def cell_layers(viewer, adata=None) -> list:
    """The cell layers in ``viewer`` (of ``adata`` when given), in layer order."""
    out = []
    for layer in viewer.layers:
        if is_cell_layer(layer) and (adata is None or layer.metadata[ADATA_META] is adata):
            out.append(layer)
    return out


def apply_colours(layers, rgba: np.ndarray) -> None:
    """Colour every cell layer from a per-cell (n, 4) RGBA array."""
    rgba = np.asarray(rgba, dtype=np.float32)
    for layer in layers:
        info = layer.metadata[CELLS_META]
        cells = info["cells"]
        if info.get("raster"):
            layer.data = _rasterise(rgba[cells], info["rows"], info["cols"], info["index"].shape)
        else:
            layer.face_color = rgba[cells]
            layer.border_color = rgba[cells]  # see cell_layer_data: tiny markers show their border


def pick_cell(layer, world_position) -> int | None:
    """Row index (into the AnnData) of the cell under ``world_position``, or None."""
    if not is_cell_layer(layer) or not layer.visible:
        return None
    info = layer.metadata[CELLS_META]
    pos = np.asarray(world_position, dtype=np.float64)[-2:]
    if info.get("raster"):
        r, c = np.round(np.asarray(layer.world_to_data(pos))[-2:]).astype(int)
        index = info["index"]
        r0, r1, c0, c1 = max(r - 2, 0), min(r + 3, index.shape[0]), max(c - 2, 0), min(c + 3, index.shape[1])
        if r0 >= r1 or c0 >= c1:
            return None
        win = index[r0:r1, c0:c1]
        hits = np.argwhere(win >= 0)
        if hits.size == 0:
            return None
        d = ((hits + [r0, c0] - [r, c]) ** 2).sum(1)
        rr, cc = hits[int(np.argmin(d))] + [r0, c0]
        return int(info["cells"][index[rr, cc]])
    # nearest point within one marker size of the click
    dy, dx = info["offset"]
    local = np.asarray(layer.data)[:, -2:]
    d2 = ((local - (pos - [dy, dx])) ** 2).sum(1)
    i = int(np.argmin(d2))
    size = float(np.max(layer.size)) if np.size(layer.size) else 1.0
    if d2[i] > size ** 2:
        return None
    return int(info["cells"][i])


def section_at(layers, world_xy) -> dict | None:
    """The cell-layer info of the visible section whose drawn extent contains (or is nearest to) a world point."""
    best, best_d = None, np.inf
    row, col = float(world_xy[0]), float(world_xy[1])
    for layer in layers:
        if not layer.visible:
            continue
        info = layer.metadata[CELLS_META]
        dy, dx = info["offset"]
        x0, y0, x1, y1 = info["bounds"]
        ddx = max(x0 + dx - col, 0.0, col - (x1 + dx))
        ddy = max(y0 + dy - row, 0.0, row - (y1 + dy))
        d = math.hypot(ddx, ddy)
        if d < best_d:
            best, best_d = info, d
    return best


def shapes_to_regions(shapes_layer, layers, *, name_prefix: str = "region") -> list:
    """Polygons of a napari Shapes layer as :class:`~napari_squint.io.geojson.Region` in slide coordinates.

    Each polygon (or rectangle / ellipse, taken by its vertices) is assigned
    to the visible section whose drawn extent contains its centroid (the
    nearest one otherwise) and shifted back by that section's offset.
    Degenerate shapes (lines, paths, fewer than 3 vertices) are skipped.
    """
    from shapely.geometry import Polygon

    from napari_squint.data.validate import SlideError

    regions = []
    for i, (verts, kind) in enumerate(zip(shapes_layer.data, shapes_layer.shape_type)):
        v = np.asarray(verts, dtype=np.float64)[:, -2:]
        if kind in ("line", "path") or v.shape[0] < 3:
            continue
        world_centroid = v.mean(0)
        info = section_at(layers, world_centroid)
        if info is None:
            raise SlideError("no visible cell layer to draw regions on: show the slide first")
        dy, dx = info["offset"]
        xy = np.column_stack([v[:, 1] - dx, v[:, 0] - dy])
        poly = Polygon(xy)
        if not poly.is_valid or poly.area <= 0:
            raise SlideError(f"shape {i} of layer {shapes_layer.name!r}: the polygon intersects itself or has no "
                             "area; redraw it")
        from napari_squint.io.geojson import Region

        regions.append(Region(section=info["section"], polygon=poly, name=f"{name_prefix}_{i}"))
    return regions


def region_world_vertices(region, layers) -> np.ndarray:
    """(m, 2) world (row, col) vertices of a region on its section (inverse of :func:`shapes_to_regions`)."""
    for layer in layers:
        info = layer.metadata[CELLS_META]
        if info["section"] == region.section or region.section is None:
            dy, dx = info["offset"]
            x, y = np.asarray(region.polygon.exterior.coords)[:-1].T
            return np.column_stack([y + dy, x + dx])
    raise KeyError(f"section {region.section!r} has no cell layer")


def cells_in_labels(labels_layer, layers, n_cells: int) -> np.ndarray:
    """(n,) bool: cells whose drawn position falls on a non-zero pixel of a (2D) Labels layer."""
    mask = np.zeros(n_cells, dtype=bool)
    data = np.asarray(labels_layer.data)
    if data.ndim != 2:
        raise ValueError(f"labels layer {labels_layer.name!r} has {data.ndim} dimensions; paint on a 2D layer")
    inverse = labels_layer._data_to_world.inverse
    for layer in layers:
        info = layer.metadata[CELLS_META]
        adata = layer.metadata[ADATA_META]
        xy = np.asarray(adata.obsm[info["spatial_key"]], dtype=np.float64)[info["cells"], :2]
        dy, dx = info["offset"]
        world = np.column_stack([xy[:, 1] + dy, xy[:, 0] + dx])
        rc = np.round(inverse(world)).astype(np.int64)
        ok = (rc[:, 0] >= 0) & (rc[:, 0] < data.shape[0]) & (rc[:, 1] >= 0) & (rc[:, 1] < data.shape[1])
        hit = np.zeros(rc.shape[0], dtype=bool)
        hit[ok] = data[rc[ok, 0], rc[ok, 1]] > 0
        mask[info["cells"][hit]] = True
    return mask
