"""Options shared by several commands, and how they map onto the API."""

from __future__ import annotations

import argparse

from napari_squint import _constants as K


def add_slide_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("slide")
    g.add_argument("--section-key", default=K.SECTION_KEY, help="obs column naming sections (default: section; 'none' for one section)")
    g.add_argument("--spatial-key", default=K.SPATIAL_KEY, help="obsm key of coordinates (default: spatial)")
    g.add_argument("--layer", default=None, help="counts layer (default: X)")
    g.add_argument("--table", default=None, help="SpatialData table name (when the .zarr holds several)")
    g.add_argument("--allow-non-counts", action="store_true", help="accept non-integer (normalised) values")
    g.add_argument("--backed", action="store_true",
                   help="keep the counts on disk (.h5ad backed, or a lazy SpatialData .zarr table) and read them chunk by chunk")


def section_key(args) -> str | None:
    return None if str(args.section_key).lower() == "none" else args.section_key


def read(args, path):
    from napari_squint.io.read import read_slide

    return read_slide(path, table_key=args.table, layer=args.layer, section_key=section_key(args),
                      spatial_key=args.spatial_key, backed=getattr(args, "backed", False))


def load_model(path, *, device=None):
    """Load a SQuINT or CIFM model folder, whichever it holds (:func:`napari_squint.api.load.load_any`)."""
    from napari_squint.api.load import load_any

    return load_any(path, device=device)
