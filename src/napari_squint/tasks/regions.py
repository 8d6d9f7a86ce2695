"""Polygons -> the cells inside them, located and checked once (the first step of in-painting).

A widget calls :func:`locate_regions` (or ``Imputer.locate``) and passes the
result to :meth:`napari_squint.tasks.impute.Imputer.impute` (``located=``), so
a drawn polygon's cells are found and its validity checked only once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.data.validate import SlideError

__all__ = ["RegionTargets", "locate_regions"]


@dataclass
class RegionTargets:
    """The cells inside polygons, located once (:func:`locate_regions`).

    Attributes
    ----------
    regions
        The :class:`~napari_squint.io.geojson.Region` list.
    mask
        ``(n,)`` bool, cells inside any region.
    labels
        ``(n,)`` index of the region holding each cell (-1 outside; the first region wins).
    empty
        Indices of regions holding no cell.
    """

    regions: list
    mask: np.ndarray
    labels: np.ndarray
    empty: list

    @property
    def names(self) -> list[str]:
        return [r.name or f"region_{i}" for i, r in enumerate(self.regions)]


def locate_regions(adata: AnnData, regions: Sequence, *, section_key: str | None,
                   spatial_key: str = K.SPATIAL_KEY) -> RegionTargets:
    """Check the polygons and find the cells inside each, once (a widget calls it, then passes the result on).

    Raises
    ------
    SlideError
        No region, or a polygon that is invalid (self-intersecting) or of zero area (names the region).
    """
    from shapely.validation import explain_validity

    from napari_squint.io.geojson import cells_in_regions

    regions = list(regions)
    if not regions:
        raise SlideError("regions is empty: draw at least one polygon")
    labels = np.full(adata.n_obs, -1, dtype=np.int64)
    empty = []
    for i, r in enumerate(regions):
        if not r.polygon.is_valid:
            raise SlideError(f"region {r.name!r}: invalid polygon ({explain_validity(r.polygon)}); "
                             "self-intersecting polygons are not allowed")
        if r.polygon.area <= 0:
            raise SlideError(f"region {r.name!r}: polygon has zero area")
        m = cells_in_regions(adata, [r], section_key=section_key, spatial_key=spatial_key)
        if not m.any():
            empty.append(i)
        labels[m & (labels < 0)] = i
    return RegionTargets(regions=regions, mask=labels >= 0, labels=labels, empty=empty)
