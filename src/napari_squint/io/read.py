"""Read slides from ``.h5ad`` or SpatialData ``.zarr`` into one AnnData.

A SpatialData table annotates shapes (cell circles/polygons) or points; the
element and the linking columns are found with
:func:`spatialdata.models.get_table_keys`, never hard-coded. Cell coordinates
come from the annotated element (shape centroids) when the table has none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.data.validate import SlideError


def read_slide(
    path: str | Path,
    *,
    table_key: str | None = None,
    layer: str | None = None,
    section_key: str | None = None,
    spatial_key: str | None = None,
    backed: bool = False,
) -> AnnData:
    """Read one slide (or several sections) as AnnData.

    Parameters
    ----------
    path
        An ``.h5ad`` file or a SpatialData ``.zarr`` store.
    table_key
        SpatialData table to use; required when the store has several tables.
    layer
        Counts layer; when given it is copied to ``X`` so the rest of the
        engine reads counts from ``X`` (the original layers are kept).
    section_key
        obs column naming sections; for SpatialData, defaults to the table's
        ``region_key`` when the table annotates several elements.
    spatial_key
        obsm key of coordinates (default ``"spatial"``).
    backed
        Open an ``.h5ad`` in backed (read-only, lazy) mode.

    Returns
    -------
    AnnData with ``obsm[spatial_key]`` coordinates and, for SpatialData, the
    annotated element names in ``uns['squint_source']``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"slide file not found: {path}")
    spatial_key = spatial_key or K.SPATIAL_KEY
    if path.suffix == ".h5ad":
        import anndata as ad

        adata = ad.read_h5ad(path, backed="r" if backed else None)
        src = {"path": str(path), "format": "h5ad"}
    elif path.suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zgroup").exists():
        adata, src = _read_spatialdata(path, table_key=table_key, spatial_key=spatial_key, section_key=section_key)
    else:
        raise SlideError(f"unsupported slide format {path.suffix!r} for {path}: use .h5ad or SpatialData .zarr")
    if layer is not None:
        if layer not in adata.layers:
            raise SlideError(f"counts layer {layer!r} not found in {path} (layers: {list(adata.layers)})")
        if backed:
            raise SlideError("layer= cannot be combined with backed=True; the counts must be in X")
        adata.X = adata.layers[layer]
    if spatial_key not in adata.obsm:
        raise SlideError(
            f"coordinates key {spatial_key!r} not found in obsm of {path} (available: {list(adata.obsm)})"
        )
    if section_key is not None and section_key not in adata.obs:
        raise SlideError(f"section key {section_key!r} not found in obs of {path} (columns: {list(adata.obs.columns)})")
    adata.uns["squint_source"] = src
    return adata


def _read_spatialdata(path: Path, *, table_key, spatial_key, section_key):
    import spatialdata as sd
    from spatialdata.models import get_table_keys

    sdata = sd.read_zarr(path)
    tables = list(sdata.tables.keys())
    if not tables:
        raise SlideError(f"SpatialData store {path} holds no table")
    if table_key is None:
        if len(tables) > 1:
            raise SlideError(f"SpatialData store {path} holds several tables {tables}: choose one with table_key=")
        table_key = tables[0]
    if table_key not in sdata.tables:
        raise SlideError(f"table {table_key!r} not in {path} (tables: {tables})")
    table = sdata.tables[table_key]
    adata = table.copy()
    src = {"path": str(path), "format": "spatialdata", "table": table_key}
    try:
        region, region_key, instance_key = get_table_keys(table)
    except Exception:  # a table that annotates nothing
        region, region_key, instance_key = None, None, None
    src.update(region=region if region is None or isinstance(region, str) else list(region),
               region_key=region_key, instance_key=instance_key)
    if spatial_key not in adata.obsm:
        if region is None:
            raise SlideError(
                f"table {table_key!r} in {path} has no obsm[{spatial_key!r}] and annotates no element to take coordinates from"
            )
        coords = np.full((adata.n_obs, 2), np.nan)
        regions = [region] if isinstance(region, str) else list(region)
        for name in regions:
            sel = (adata.obs[region_key].astype(str) == name).to_numpy()
            xy = _element_xy(sdata, name)
            ids = adata.obs.loc[sel, instance_key].to_numpy()
            missing = ~pd.Index(ids).isin(xy.index)
            if missing.any():
                raise SlideError(
                    f"{int(missing.sum())} cells of table {table_key!r} have {instance_key}s absent from element {name!r}"
                )
            coords[sel] = xy.loc[ids].to_numpy()
        adata.obsm[spatial_key] = coords
    if section_key is None and region_key is not None and adata.obs[region_key].nunique() > 1:
        src["section_key"] = region_key
    return adata, src


def _element_xy(sdata, name: str) -> pd.DataFrame:
    """x, y of each instance of a shapes or points element, indexed by instance id."""
    if name in sdata.shapes:
        gdf = sdata.shapes[name]
        cent = gdf.geometry.centroid
        return pd.DataFrame({"x": cent.x.to_numpy(), "y": cent.y.to_numpy()}, index=gdf.index)
    if name in sdata.points:
        df = sdata.points[name].compute()
        return df[["x", "y"]]
    raise SlideError(f"element {name!r} annotated by the table is neither shapes nor points")
