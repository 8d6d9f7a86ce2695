"""Write results beside the user's data without losing anything.

Files are written to a temporary sibling and renamed into place, so readers
never see a half-written file and an existing file is only replaced once the
new one is complete. Input files are never modified here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_squint import _constants as K


def _umask() -> int:
    """The process's file-creation mask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temporary file the permissions a plain ``open(path, "w")`` would, then rename it onto
    ``path``. (``tempfile.mkstemp`` creates files readable by their owner only.)"""
    if Path(tmp).is_file():
        os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def _replace(tmp: Path, path: Path) -> None:
    if path.exists() and path.is_dir():
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


def write_h5ad(adata: AnnData, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write ``adata`` to ``path`` atomically."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".h5ad", dir=path.parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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


def write_spatialdata(sdata, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write a SpatialData object to a ``.zarr`` folder atomically."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        sdata.write(tmp)
        _replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
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
