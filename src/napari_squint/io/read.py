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
        Keep the counts on disk: an ``.h5ad`` opens in backed (read-only)
        mode; for a SpatialData ``.zarr`` the table's ``X`` (or ``layer``) is
        a lazy dask array over the store's chunks while obs, var, obsm and the
        annotated shapes/points are read. Either way the engine reads counts
        chunk by chunk (:func:`napari_squint.data.prepare.load_counts_chunked`).

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
        adata = _read_h5ad(path, backed=backed)
        src = {"path": str(path), "format": "h5ad"}
    elif path.suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zgroup").exists():
        try:
            adata, src = _read_spatialdata(path, table_key=table_key, spatial_key=spatial_key,
                                           section_key=section_key, lazy_layer=(layer or "X") if backed else None)
        except SlideError:
            raise
        except Exception as err:  # zarr / spatialdata read errors take many types; the store is at fault
            raise SlideError(f"{path} cannot be read as a SpatialData .zarr store "
                             f"({type(err).__name__}: {_short(err)})") from None
        if not backed:
            from napari_squint.data.validate import check_sparse_structure

            check_sparse_structure(adata.X, where=f"{path}: table X")
            for key in adata.layers:
                check_sparse_structure(adata.layers[key], where=f"{path}: table layer {key!r}")
    else:
        raise SlideError(f"unsupported slide format {path.suffix!r} for {path}: use .h5ad or SpatialData .zarr")
    if layer is not None and not (backed and src["format"] == "spatialdata"):  # lazy tables hold it in X
        if layer not in adata.layers:
            raise SlideError(f"counts layer {layer!r} not found in {path} (layers: {list(adata.layers)})")
        if backed and src["format"] == "h5ad":
            raise SlideError("layer= cannot be combined with backed=True for .h5ad; the counts must be in X")
        adata.X = adata.layers[layer]
    if spatial_key not in adata.obsm:
        raise SlideError(
            f"coordinates key {spatial_key!r} not found in obsm of {path} (available: {list(adata.obsm)})"
        )
    if section_key is not None and section_key not in adata.obs:
        raise SlideError(f"section key {section_key!r} not found in obs of {path} (columns: {list(adata.obs.columns)})")
    adata.uns["squint_source"] = src
    return adata


def _read_h5ad(path: Path, *, backed: bool) -> AnnData:
    """Read an ``.h5ad`` after checking its sparse matrices on disk; any failure names the file.

    anndata reads a CSR matrix whose indices lie outside its shape without complaint, and scipy may then
    crash the process, so the arrays are checked first (:func:`napari_squint.data.validate.check_sparse_on_disk`).
    """
    import anndata as ad
    import h5py

    from napari_squint.data.validate import check_sparse_on_disk

    try:
        with h5py.File(path, "r") as f:
            for name in ["X", *(f"layers/{k}" for k in (f["layers"].keys() if "layers" in f else []))]:
                if name in f and isinstance(f[name], h5py.Group):
                    g = f[name]
                    shape = tuple(int(v) for v in g.attrs.get("shape", ()))
                    if len(shape) == 2:
                        where = f"{path}: {'X' if name == 'X' else name.replace('layers/', 'layer ')}"
                        check_sparse_on_disk(g, shape, where=where)
    except SlideError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise SlideError(f"{path} cannot be read as an .h5ad file ({_short(err)})") from None
    try:
        adata = ad.read_h5ad(path, backed="r" if backed else None)
    except Exception as err:  # anndata's read errors take many types; the file is at fault, not the tool
        raise SlideError(f"{path} cannot be read as an .h5ad file ({type(err).__name__}: {_short(err)})") from None
    if not backed:
        from napari_squint.data.validate import check_sparse_structure

        check_sparse_structure(adata.X, where=f"{path}: X")
        for key in adata.layers:
            check_sparse_structure(adata.layers[key], where=f"{path}: layer {key!r}")
    return adata


def _short(err: BaseException, n: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= n else text[:n] + "..."


def _read_spatialdata(path: Path, *, table_key, spatial_key, section_key, lazy_layer: str | None = None):
    import spatialdata as sd
    from spatialdata.models import get_table_keys

    if lazy_layer is not None:
        sdata = sd.read_zarr(path, selection=("shapes", "points"))
        all_tables = _lazy_tables(path, lazy_layer)
    else:
        sdata = sd.read_zarr(path)
        all_tables = sdata.tables
    tables = list(all_tables.keys())
    if not tables:
        raise SlideError(f"SpatialData store {path} holds no table")
    if table_key is None:
        if len(tables) > 1:
            raise SlideError(f"SpatialData store {path} holds several tables {tables}: choose one with table_key=")
        table_key = tables[0]
    if table_key not in all_tables:
        raise SlideError(f"table {table_key!r} not in {path} (tables: {tables})")
    table = all_tables[table_key]
    adata = table if lazy_layer is not None else table.copy()
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


def _lazy_tables(path: Path, layer: str) -> dict[str, AnnData]:
    """The store's tables with obs/var/obsm/uns in memory and the counts (``X`` or
    ``layers[layer]``, placed in ``X``) as a lazy dask array over the zarr chunks."""
    import zarr
    from anndata.experimental import read_elem_lazy
    from anndata.io import read_elem

    root = zarr.open_group(str(path), mode="r")
    if "tables" not in root:
        return {}
    out = {}
    for name, g in root["tables"].groups():
        if layer == "X":
            if "X" not in g:
                raise SlideError(f"table {name!r} in {path} has no X")
            X = read_elem_lazy(g["X"])
        else:
            if "layers" not in g or layer not in g["layers"]:
                raise SlideError(f"counts layer {layer!r} not found in table {name!r} of {path}")
            X = read_elem_lazy(g["layers"][layer])
        parts = {k: read_elem(g[k]) for k in ("obs", "var", "obsm", "uns") if k in g}
        attrs = (parts.get("uns") or {}).get("spatialdata_attrs")
        if attrs is not None and isinstance(attrs.get("region"), np.ndarray):  # zarr gives arrays, not lists
            attrs["region"] = attrs["region"].tolist()
        out[name] = AnnData(X=X, obs=parts.get("obs"), var=parts.get("var"), obsm=parts.get("obsm"),
                            uns=parts.get("uns"))
    return out


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
