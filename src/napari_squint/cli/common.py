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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--epochs``, ``--batch-size``, ``--k``...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_genes(text: str, adata) -> str | int | list[str]:
    """``--genes``: ``all``, a number of highly variable genes (at most the slide's), or comma-separated names."""
    from napari_squint.data.validate import SlideError

    text = str(text).strip()
    if text.lower() == "all":
        return "all"
    try:
        n = int(text)
    except ValueError:
        names = [g.strip() for g in text.split(",") if g.strip()]
        missing = [g for g in names if g not in adata.var_names]
        if missing:
            raise SlideError(f"--genes {text!r}: {len(missing)} of {len(names)} gene names are not in the slide, "
                             f"e.g. {missing[:5]} (give 'all', a number of highly variable genes, or "
                             "comma-separated names of the slide's genes)") from None
        return names
    if n < 1 or n > adata.n_vars:
        raise SlideError(f"--genes {n}: must lie between 1 and the slide's {adata.n_vars} genes (or 'all')")
    return n


def inputs(args) -> list:
    """Every input path a command reads (data, model folder, polygons...), for the output checks."""
    names = ("data", "model_dir", "polygons", "region", "holdout", "model")
    return [getattr(args, n) for n in names if isinstance(getattr(args, n, None), str)]


def output_folder(args, command: str):
    """Stage ``--out`` as a folder of the tool's own (see :func:`napari_squint.io.outputs.output_folder`)."""
    from napari_squint.io.outputs import output_folder as _folder

    return _folder(args.out, inputs=inputs(args), overwrite=getattr(args, "overwrite", False), command=command)


def final_paths(obj, stage, final):
    """``obj`` (dicts, lists, strings) with paths inside the staging folder rewritten to the final folder."""
    stage, final = str(stage), str(final)
    if isinstance(obj, dict):
        return {k: final_paths(v, stage, final) for k, v in obj.items()}
    if isinstance(obj, list):
        return [final_paths(v, stage, final) for v in obj]
    if isinstance(obj, str) and obj.startswith(stage):
        return final + obj[len(stage):]
    return obj
