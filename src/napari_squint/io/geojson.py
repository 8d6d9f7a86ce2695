"""Polygons as GeoJSON: a FeatureCollection of Polygon features, each with a
``section`` property, coordinates in the slide's own units."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from napari_squint.data.validate import SlideError
from napari_squint.io.write import publish


@dataclass
class Region:
    """A polygon drawn on one section."""

    section: str | None
    polygon: object  # shapely Polygon
    name: str = ""


def _polygon(coords, where: str):
    from shapely.geometry import Polygon
    from shapely.validation import explain_validity

    poly = Polygon(coords[0], holes=coords[1:] if len(coords) > 1 else None)
    if not poly.is_valid:
        raise SlideError(f"{where}: invalid polygon ({explain_validity(poly)}); self-intersecting polygons are not allowed")
    if poly.area <= 0:
        raise SlideError(f"{where}: polygon has zero area")
    return poly


def read_polygons(path: str | Path) -> list[Region]:
    """Read regions from a GeoJSON file (FeatureCollection, Feature, or a bare Polygon)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"polygon file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SlideError(f"{path} is not valid JSON: {err}") from None
    feats = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
    regions = []
    for i, f in enumerate(feats or []):
        geom = f.get("geometry", f) if f.get("type") == "Feature" else f
        where = f"{path.name}, feature {i}"
        props = f.get("properties") or {}
        kind = geom.get("type")
        if kind == "Polygon":
            polys = [geom["coordinates"]]
        elif kind == "MultiPolygon":
            polys = geom["coordinates"]
        else:
            raise SlideError(f"{where}: geometry type {kind!r} is not a Polygon")
        for p in polys:
            sec = props.get("section")
            regions.append(Region(section=None if sec is None else str(sec), polygon=_polygon(p, where),
                                  name=str(props.get("name", f"region_{i}"))))
    if not regions:
        raise SlideError(f"{path} contains no polygons")
    return regions


def write_polygons(regions: list[Region], path: str | Path) -> Path:
    """Write regions as a GeoJSON FeatureCollection (atomically)."""
    from shapely.geometry import mapping

    feats = []
    for r in regions:
        props = {"name": r.name}
        if r.section is not None:
            props["section"] = r.section
        feats.append({"type": "Feature", "properties": props, "geometry": mapping(r.polygon)})
    doc = {"type": "FeatureCollection", "features": feats}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, default=lambda o: list(o))
    publish(tmp, path)
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
