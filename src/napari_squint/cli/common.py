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
                   help="read an .h5ad lazily (counts stay on disk and are read chunk by chunk)")


def section_key(args) -> str | None:
    return None if str(args.section_key).lower() == "none" else args.section_key


def read(args, path):
    from napari_squint.io.read import read_slide

    return read_slide(path, table_key=args.table, layer=args.layer, section_key=section_key(args),
                      spatial_key=args.spatial_key, backed=getattr(args, "backed", False))


def load_model(path, *, device=None):
    """Load a SQuINT or CIFM model folder, whichever it holds."""
    import json
    from pathlib import Path

    meta_file = Path(path) / K.CKPT_META
    kind = json.loads(meta_file.read_text()).get("model", "squint") if meta_file.exists() else "squint"
    if kind == "cifm":
        from napari_squint.api.cifm import Cifm

        return Cifm.load(path, device=device)
    from napari_squint.api.squint import Squint

    return Squint.load(path, device=device)
