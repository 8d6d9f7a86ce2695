"""npe2 reader: SpatialData ``.zarr`` stores and ``.h5ad`` slides as one cell layer per section."""

from __future__ import annotations

from pathlib import Path

from napari_squint._napari.layers import cell_layer_data
from napari_squint._napari.session import default_section_key


def _is_slide(path: Path) -> bool:
    if path.suffix == ".h5ad" and path.is_file():
        return True
    return path.is_dir() and (path / "tables").is_dir() and (
        path.suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zgroup").exists())


def napari_get_reader(path):
    """Return :func:`read_slide_layers` when ``path`` is one slide napari-squint can read, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(str(path))
    return read_slide_layers if _is_slide(p) else None


def read_slide_layers(path) -> list[tuple]:
    """Read a slide and return its cell layers (the AnnData rides along in each layer's metadata).

    A SpatialData store with several tables is read through its first table
    (``squint*`` tables written by this plugin are skipped); choose another in
    the "Slide & model" widget.
    """
    from napari_squint._napari.slide_widget import list_tables
    from napari_squint.io.read import read_slide

    if isinstance(path, (list, tuple)):
        path = path[0]
    path = Path(str(path))
    tables = [t for t in list_tables(path) if not t.startswith("squint")]
    adata = read_slide(path, table_key=tables[0] if len(tables) > 1 else None)
    return layers_for(adata)


def layers_for(adata, *, source: dict | None = None) -> list[tuple]:
    """Cell layer tuples for an AnnData, with the default section key and layout."""
    src = dict(source if source is not None else adata.uns.get("squint_source", {}))
    key = default_section_key(adata, src)
    return cell_layer_data(adata, section_key=key, spatial_key="spatial", layout="side", source=src)
