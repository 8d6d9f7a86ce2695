"""Polygons as GeoJSON: a FeatureCollection of Polygon features, each with a
``section`` property, coordinates in the slide's own units."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from napari_squint.data.validate import SlideError
from napari_squint.io.jsonfile import read_json


@dataclass
class Region:
    """A polygon drawn on one section."""

    section: str | None
    polygon: object  # shapely Polygon
    name: str = ""


def _ring(ring, where: str, what: str) -> np.ndarray:
    """A ring as an (m, 2) float array of distinct, finite vertices (closing vertex dropped)."""
    if not isinstance(ring, (list, tuple)):
        raise SlideError(f"{where}: {what} must be a list of [x, y] positions, found {type(ring).__name__}")
    pts = []
    for j, p in enumerate(ring):
        if (not isinstance(p, (list, tuple)) or len(p) < 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p[:2])):
            raise SlideError(f"{where}: {what}, position {j} is {p!r:.60}; expected [x, y] numbers")
        pts.append((float(p[0]), float(p[1])))
    xy = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(xy).all():
        raise SlideError(f"{where}: {what} has NaN or infinite coordinates")
    distinct = np.unique(xy, axis=0).shape[0]
    if distinct < 3:
        raise SlideError(f"{where}: {what} has fewer than 3 distinct vertices ({distinct}); a polygon needs at "
                         "least 3 corners")
    if len(xy) > 1 and (xy[0] == xy[-1]).all():
        xy = xy[:-1]
    return xy


def _polygon(coords, where: str):
    from shapely.geometry import Polygon
    from shapely.validation import explain_validity

    if not isinstance(coords, (list, tuple)) or not coords:
        raise SlideError(f"{where}: polygon coordinates must be a non-empty list of rings, found {coords!r:.60}")
    rings = [_ring(r, where, "outer ring" if i == 0 else f"hole {i}") for i, r in enumerate(coords)]
    poly = Polygon(rings[0], holes=rings[1:] or None)
    if not poly.is_valid:
        raise SlideError(f"{where}: invalid polygon ({explain_validity(poly)}); self-intersecting polygons (edges "
                         "that cross or touch) are not allowed")
    if poly.area <= 0:
        raise SlideError(f"{where}: polygon has zero area (its vertices lie on one line)")
    return poly


def read_polygons(path: str | Path) -> list[Region]:
    """Read regions from a GeoJSON file (FeatureCollection, Feature, or a bare Polygon / MultiPolygon).

    Raises
    ------
    FileNotFoundError
        No such file.
    SlideError
        Not JSON, not GeoJSON polygons, or a polygon that is not usable; the message names the file and the
        feature index.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"polygon file not found: {path}")
    doc = read_json(path, SlideError)
    if not isinstance(doc, dict):
        raise SlideError(f"{path}: the top level is a JSON {type(doc).__name__}; expected a GeoJSON object "
                         "(a FeatureCollection, a Feature or a Polygon)")
    if doc.get("type") == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise SlideError(f"{path}: 'features' must be a list, found {type(feats).__name__}")
    else:
        feats = [doc]
    regions = []
    for i, f in enumerate(feats):
        where = f"{path.name}, feature {i}"
        if not isinstance(f, dict):
            raise SlideError(f"{where}: expected a GeoJSON object, found {type(f).__name__}")
        geom = f.get("geometry") if f.get("type") == "Feature" else f
        if geom is None:
            raise SlideError(f"{where}: geometry is null; every feature needs a Polygon geometry")
        if not isinstance(geom, dict):
            raise SlideError(f"{where}: geometry must be an object, found {type(geom).__name__}")
        props = f.get("properties") or {}
        if not isinstance(props, dict):
            raise SlideError(f"{where}: properties must be an object, found {type(props).__name__}")
        kind = geom.get("type")
        coords = geom.get("coordinates")
        if kind == "Polygon":
            polys = [coords]
        elif kind == "MultiPolygon":
            if not isinstance(coords, list) or not coords:
                raise SlideError(f"{where}: MultiPolygon coordinates must be a non-empty list of polygons")
            polys = coords
        else:
            raise SlideError(f"{where}: geometry type {kind!r} is not a Polygon")
        sec = props.get("section")
        if isinstance(sec, (dict, list)):
            raise SlideError(f"{where}: the 'section' property must be a name or number, found {sec!r:.60}")
        for p in polys:
            regions.append(Region(section=None if sec is None else str(sec), polygon=_polygon(p, where),
                                  name=str(props.get("name", f"region_{i}"))))
    if not regions:
        raise SlideError(f"{path} contains no polygons")
    return regions


def write_polygons(regions: list[Region], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write regions as a GeoJSON FeatureCollection, atomically.

    An existing file is replaced only with ``overwrite=True`` and only when napari-squint wrote it
    (:mod:`napari_squint.io.outputs`).
    """
    from shapely.geometry import mapping

    from napari_squint.io.outputs import check_output, write_json

    feats = []
    for r in regions:
        props = {"name": r.name}
        if r.section is not None:
            props["section"] = r.section
        feats.append({"type": "Feature", "properties": props, "geometry": mapping(r.polygon)})
    doc = {"type": "FeatureCollection", "features": feats}
    path = check_output(path, overwrite=overwrite)
    write_json(path, doc, indent=None, default=lambda o: list(o))
    return path


def cells_in_regions(adata, regions: list[Region], *, section_key: str | None, spatial_key: str = "spatial",
                     far_factor: float = 0.5) -> np.ndarray:
    """Boolean mask of the cells inside any region (on the region's section).

    Raises
    ------
    SlideError
        A region names a section that is not in the slide, or lies far outside
        its section's extent (by more than ``far_factor`` x the section's size).
    """
    import shapely

    coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)[:, :2]
    if section_key is not None and section_key in adata.obs:
        sec = adata.obs[section_key].astype(str).to_numpy()
    else:
        sec = np.full(adata.n_obs, None, dtype=object)
    names = set(pd.unique(sec))
    inside = np.zeros(adata.n_obs, dtype=bool)
    for r in regions:
        if r.section is None:
            if len(names) > 1:
                raise SlideError(f"region {r.name!r} has no 'section' property but the slide has {len(names)} sections")
            sel = np.ones(adata.n_obs, dtype=bool)
        else:
            if r.section not in names:
                raise SlideError(f"region {r.name!r} names section {r.section!r}, which is not in the slide "
                                 f"(sections: {sorted(map(str, names))[:10]})")
            sel = sec == r.section
        xy = coords[sel]
        lo, hi = xy.min(0), xy.max(0)
        size = np.maximum(hi - lo, 1e-9)
        bx0, by0, bx1, by1 = r.polygon.bounds
        if (bx1 < lo[0] - far_factor * size[0] or bx0 > hi[0] + far_factor * size[0]
                or by1 < lo[1] - far_factor * size[1] or by0 > hi[1] + far_factor * size[1]):
            raise SlideError(f"region {r.name!r} lies far outside section {r.section!r} (bounds {r.polygon.bounds} vs "
                             f"cells in [{lo[0]:.4g}, {hi[0]:.4g}] x [{lo[1]:.4g}, {hi[1]:.4g}]); check the coordinate units")
        idx = np.flatnonzero(sel)
        hit = shapely.contains_xy(r.polygon, xy[:, 0], xy[:, 1])
        inside[idx[hit]] = True
    return inside
