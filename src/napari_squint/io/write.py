"""Write results beside the user's data without losing anything.

Files are written to a temporary sibling and renamed into place, so readers
never see a half-written file and an existing file is only replaced once the
new one is complete. Input files are never modified here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.io.outputs import current_umask


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temporary file the permissions a plain ``open(path, "w")`` would, then rename it onto
    ``path``. (``tempfile.mkstemp`` creates files readable by their owner only.)"""
    if Path(tmp).is_file():
        os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)


def write_h5ad(adata: AnnData, path: str | Path, *, overwrite: bool = False, inputs=()) -> Path:
    """Write ``adata`` to ``path`` atomically.

    An existing ``path`` is refused unless ``overwrite=True``, and even then only a file this package wrote
    is replaced; ``inputs`` (paths the data came from) are never written to. See
    :mod:`napari_squint.io.outputs`.
    """
    from napari_squint.io.outputs import atomic_path, check_output

    path = check_output(path, inputs=inputs, overwrite=overwrite)
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return path


def to_spatialdata(adata: AnnData, *, section_key: str | None = K.SECTION_KEY, spatial_key: str = K.SPATIAL_KEY,
                   radius: float | None = None, table_name: str = "table"):
    """Build a SpatialData object: one circles element per section, one table annotating them.

    Each section's cells live in their own coordinate system (named after the
    section) because sections are not registered to one another. The table
    links rows to circles through ``region`` / ``instance_id`` columns declared
    in ``uns['spatialdata_attrs']``.
    """
    import geopandas as gpd
    import spatialdata as sd
    from shapely.geometry import Point  # noqa: F401  (geopandas builds points from xy)
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    from napari_squint.data.graph import median_nn_distance

    coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)[:, :2]
    sec = (adata.obs[section_key].astype(str) if section_key and section_key in adata.obs
           else pd.Series(["slide"] * adata.n_obs, index=adata.obs_names))
    shapes = {}
    region = np.empty(adata.n_obs, dtype=object)
    instance = np.zeros(adata.n_obs, dtype=np.int64)
    for name in pd.unique(sec):
        sel = np.flatnonzero((sec == name).to_numpy())
        key = f"cells_{_safe(name)}"
        r = radius if radius is not None else 0.5 * median_nn_distance(coords[sel]) if sel.size > 1 else 1.0
        gdf = gpd.GeoDataFrame(
            {"radius": np.full(sel.size, r)},
            geometry=gpd.points_from_xy(coords[sel, 0], coords[sel, 1]),
            index=pd.RangeIndex(sel.size),
        )
        shapes[key] = ShapesModel.parse(gdf, transformations={_safe(name): Identity()})
        region[sel] = key
        instance[sel] = np.arange(sel.size)
    table = adata.copy()
    table.obs["region"] = pd.Categorical(region)
    table.obs["instance_id"] = instance
    table.uns.pop("spatialdata_attrs", None)
    table = TableModel.parse(table, region=list(shapes), region_key="region", instance_key="instance_id")
    return sd.SpatialData(shapes=shapes, tables={table_name: table})


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in str(name))


def write_spatialdata(sdata, path: str | Path, *, overwrite: bool = False, inputs=()) -> Path:
    """Write a SpatialData object to a ``.zarr`` folder atomically (built beside it, then swapped in).

    The same rules as :func:`write_h5ad`: an existing store is replaced only with ``overwrite=True`` and only
    when this package wrote it (its ``.squint-output.json`` marker).
    """
    import anndata as ad

    from napari_squint.io.outputs import output_folder

    path = Path(path)
    with output_folder(path, inputs=inputs, overwrite=overwrite, command="write_spatialdata") as tmp:
        target = tmp / path.name
        # anndata warns for every array it writes to zarr v3 unless the sharding choice is explicit: no sharding
        # (today's layout, readable by every version)
        with ad.settings.override(auto_shard_zarr_v3=False):
            sdata.write(target)
        for child in target.iterdir():  # the store's content becomes the staging folder's
            os.replace(child, tmp / child.name)
        target.rmdir()
    return path


def json_default(o):
    """``json.dump(..., default=json_default)``: numpy scalars and arrays as Python numbers and lists, else str."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
