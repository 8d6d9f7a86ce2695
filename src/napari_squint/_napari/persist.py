"""Save a session's results into a SpatialData store without touching the user's elements.

What is written (every name starts with ``squint``; nothing else is modified):

* table ``squint_cells``: one row per cell of the slide's table with every
  column the session computed (``squint_token``, ``squint_activation``,
  ``squint_perturbed``, token before/after ...) and the latents in ``obsm``;
  it annotates the same elements as the original table (same region key and
  instance ids), so SpatialData tools can join it to the cells.
* shapes ``squint_regions_<section>``: the polygons drawn for the last
  imputation or perturbation, in the section's coordinate system.
* table ``squint_imputed``: the imputed cells (``X`` and layers ``imputed`` /
  ``imputed_nbr``, obs ``squint_token`` / ``squint_created``, obsm ``spatial``).

Where: into the slide's own ``.zarr`` when it came from one (new elements
only, via ``SpatialData.write_element``); otherwise into a new
``<slide>.squint.zarr`` beside the input file (built with
:func:`napari_squint.io.write.to_spatialdata` from the slide as read, then the
new elements). Only ``squint*`` elements written by an earlier save are ever
replaced (deleted, then written again: spatialdata cannot overwrite an element
of the store it reads from). An ``.h5ad`` target gets the slide with its new columns
(written atomically); the input file is never overwritten. No Qt here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from napari_squint import _constants as K

RESULTS_TABLE = K.RESULTS_TABLE  #: table with the computed per-cell columns
IMPUTED_TABLE = "squint_imputed"  #: table with the imputed cells
REGIONS_PREFIX = "squint_regions"  #: shapes element per section with the drawn polygons


def default_target(session) -> Path | None:
    """The slide's own ``.zarr``, or ``<input>.squint.zarr`` beside an ``.h5ad``; None when unknown."""
    src = session.source or {}
    path = src.get("saved_to") or src.get("path")
    if not path:
        return None
    path = Path(path)
    if src.get("format") == "spatialdata" or path.suffix == ".zarr" or src.get("saved_to"):
        return path
    return path.with_name(path.stem + ".squint.zarr")


def new_obs_columns(session) -> list[str]:
    return [c for c in session.adata.obs.columns if c not in set(session.original_obs)]


def new_obsm_keys(session) -> list[str]:
    return [k for k in session.adata.obsm.keys() if k not in set(session.original_obsm)]


def _original_copy(session):
    """The slide as read: computed columns dropped."""
    a = session.adata
    base = a.copy()
    for c in new_obs_columns(session):
        del base.obs[c]
    for k in new_obsm_keys(session):
        del base.obsm[k]
    base.uns.pop(K.UNS_KEY, None)
    return base


def restore_results(session) -> list[str]:
    """Bring back the results saved in the session's ``.zarr`` (table ``squint_cells``); returns the obs columns.

    A slide reopened from a store the dock saved into shows its tokens,
    scores and perturbation columns again (the originals are read as they
    were; the results are added as computed columns, so the next save rewrites
    them). Rows are matched by cell name; nothing happens without the table.
    """
    import anndata as ad

    src = session.source or {}
    path = Path(src["path"]) if src.get("path") else None
    table = path / "tables" / RESULTS_TABLE if path is not None else None
    if table is None or not table.is_dir() or session.adata is None:
        return []
    res = ad.read_zarr(table)
    a = session.adata
    names = pd.Index(a.obs_names).astype(str)
    rows = pd.Index(res.obs_names).astype(str).get_indexer(names)
    if (rows < 0).any():
        return []  # the table is of another slide: leave it alone
    cols = [c for c in res.obs.columns if c.startswith("squint") and c not in a.obs]
    for c in cols:
        a.obs[c] = res.obs[c].iloc[rows].to_numpy()
        if isinstance(res.obs[c].dtype, pd.CategoricalDtype):
            a.obs[c] = pd.Categorical(a.obs[c], categories=res.obs[c].cat.categories)
    for k in res.obsm.keys():
        if k not in a.obsm:
            a.obsm[k] = np.asarray(res.obsm[k])[rows]
    if K.UNS_KEY in res.uns and K.UNS_KEY not in a.uns:
        a.uns[K.UNS_KEY] = dict(res.uns[K.UNS_KEY])
    return cols


def _results_anndata(session):
    import anndata as ad

    a = session.adata
    obs = a.obs[new_obs_columns(session)].copy()
    res = ad.AnnData(obs=obs)
    for k in new_obsm_keys(session):
        res.obsm[k] = np.asarray(a.obsm[k])
    uns = a.uns.get(K.UNS_KEY)
    if uns:
        res.uns[K.UNS_KEY] = _plain(uns)
    return res


def _plain(obj):
    """uns content that zarr can store: dicts of arrays/str/numbers; other objects become strings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        try:
            arr = np.asarray(obj)
            if arr.dtype != object:
                return arr
        except Exception:
            pass
        return np.asarray([str(v) for v in obj])
    if isinstance(obj, (str, int, float, bool, np.ndarray, np.generic)) or obj is None:
        return "None" if obj is None else obj
    if isinstance(obj, pd.DataFrame):
        return obj
    return str(obj)


def save_results(session, path: str | Path | None = None) -> Path:
    """Write the session's results (see module doc); returns the path written.

    Raises
    ------
    ValueError
        No slide, no target path (a synthetic slide needs one), or a target
        that is the input ``.h5ad`` itself.
    """
    if session.adata is None:
        raise ValueError("nothing to save: no slide is loaded")
    target = Path(path) if path is not None else default_target(session)
    if target is None:
        raise ValueError("the slide was not read from a file: choose where to save (a .zarr or .h5ad path)")
    src_path = session.source.get("path")
    if target.suffix == ".h5ad":
        if src_path and Path(src_path).resolve() == target.resolve():
            raise ValueError(f"{target} is the input slide; choose another file (the input is never overwritten)")
        from napari_squint.io.write import write_h5ad

        out = session.adata.copy()
        if K.UNS_KEY in out.uns:
            out.uns[K.UNS_KEY] = _plain(out.uns[K.UNS_KEY])
        if session.regions:
            out.uns["squint_regions"] = _regions_geojson(session.regions)
        # the file dialog asked before replacing; still, only a file napari-squint wrote is ever replaced
        inputs = [src_path] if src_path else []
        write_h5ad(out, target, overwrite=True, inputs=inputs)
        imputed = session.results.get("impute")
        if imputed is not None:
            write_h5ad(imputed, target.with_name(target.stem + ".imputed.h5ad"), overwrite=True, inputs=inputs)
    else:
        import anndata as ad

        # anndata warns on every array it writes to zarr v3 unless the sharding choice is explicit: say no
        # sharding (today's layout, readable by every version) once here instead of ~150 console warnings
        with ad.settings.override(auto_shard_zarr_v3=False):
            _save_zarr(session, target)
    session.source["saved_to"] = str(target)
    session.dirty = False
    session.notify("saved")
    return target


def _regions_geojson(regions) -> str:
    import json

    from shapely.geometry import mapping

    feats = [{"type": "Feature", "properties": {"name": r.name, "section": r.section},
              "geometry": mapping(r.polygon)} for r in regions]
    return json.dumps({"type": "FeatureCollection", "features": feats}, default=list)


def _save_zarr(session, target: Path) -> None:
    import spatialdata as sd

    from napari_squint.io.write import to_spatialdata, write_spatialdata

    src = session.source or {}
    if target.exists():
        sdata = sd.read_zarr(target)
        table_key = src.get("table") if src.get("path") and Path(src["path"]).resolve() == target.resolve() else None
        table_key = table_key or _main_table(sdata)
    else:
        base = _original_copy(session)
        sdata = to_spatialdata(base, section_key=session.section_key, spatial_key=session.spatial_key)
        write_spatialdata(sdata, target)
        sdata = sd.read_zarr(target)
        table_key = "table"
    new: dict[str, tuple[str, object]] = {}
    new[RESULTS_TABLE] = ("tables", _annotate_like(_results_anndata(session), sdata, table_key,
                                                   session.adata.obs_names))
    for name, shapes in _region_elements(session, sdata, table_key).items():
        new[name] = ("shapes", shapes)
    imputed = session.results.get("impute")
    if imputed is not None:
        from spatialdata.models import TableModel

        imp = imputed.copy()
        imp.uns.pop("spatialdata_attrs", None)
        if K.UNS_KEY in imp.uns:
            imp.uns[K.UNS_KEY] = _plain(imp.uns[K.UNS_KEY])
        new[IMPUTED_TABLE] = ("tables", TableModel.parse(imp))
    for name, (kind, element) in new.items():
        # spatialdata will not overwrite an element of the store it is backed by: an earlier squint
        # element is deleted first (it is recomputable: the session still holds it), then written anew.
        if (target / kind / name).exists() and sdata.get(name) is not None:
            sdata.delete_element_from_disk(name)
        getattr(sdata, kind)[name] = element
        sdata.write_element(name)


def _main_table(sdata) -> str:
    tables = [t for t in sdata.tables.keys() if not t.startswith("squint")]
    if not tables:
        raise ValueError("the SpatialData store holds no table of its own to annotate")
    return tables[0]


def _annotate_like(res, sdata, table_key: str, obs_names):
    """Parse ``res`` as a table annotating what ``sdata.tables[table_key]`` annotates, row for row."""
    from spatialdata.models import TableModel, get_table_keys

    table = sdata.tables[table_key]
    try:
        region, region_key, instance_key = get_table_keys(table)
    except Exception:
        region = None
    res.uns.pop("spatialdata_attrs", None)
    if region is None:
        return TableModel.parse(res)
    obs = table.obs.reindex(pd.Index(obs_names).astype(str))
    if obs[region_key].isna().any():
        raise ValueError(f"table {table_key!r} lacks some of the slide's cells; cannot annotate {RESULTS_TABLE!r}")
    res.obs[region_key] = pd.Categorical(obs[region_key].astype(str).to_numpy())
    res.obs[instance_key] = obs[instance_key].to_numpy()
    regions = [region] if isinstance(region, str) else list(region)
    return TableModel.parse(res, region=regions, region_key=region_key, instance_key=instance_key)


def _region_elements(session, sdata, table_key: str) -> dict:
    if not session.regions:
        return {}
    import geopandas as gpd
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity, get_transformation

    from napari_squint.io.write import _safe

    out = {}
    by_section: dict = {}
    for r in session.regions:
        by_section.setdefault(r.section, []).append(r)
    element_of = _elements_by_section(session, sdata, table_key)
    for section, regs in by_section.items():
        element = element_of.get(section)
        transforms = (get_transformation(element, get_all=True) if element is not None
                      else {_safe(section) if section is not None else "global": Identity()})
        gdf = gpd.GeoDataFrame({"name": [r.name for r in regs], "section": [str(r.section) for r in regs]},
                               geometry=[r.polygon for r in regs])
        name = f"{REGIONS_PREFIX}_{_safe(section)}" if section is not None else REGIONS_PREFIX
        out[name] = ShapesModel.parse(gdf, transformations=dict(transforms))
    return out


def _elements_by_section(session, sdata, table_key: str) -> dict:
    """The annotated element holding each section's cells (when the table says)."""
    from spatialdata.models import get_table_keys

    table = sdata.tables[table_key]
    try:
        _, region_key, _ = get_table_keys(table)
    except Exception:
        return {}
    labels = session.section_labels()
    obs = table.obs.reindex(pd.Index(session.adata.obs_names).astype(str))
    out = {}
    for section in pd.unique(labels):
        names = pd.unique(obs.loc[labels == section, region_key].astype(str))
        if len(names) == 1:
            name = names[0]
            el = sdata.shapes.get(name) if name in sdata.shapes else sdata.points.get(name) if name in sdata.points else None
            if el is not None:
                out[section] = el
    return out
