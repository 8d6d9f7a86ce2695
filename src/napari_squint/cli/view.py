"""``squint view [DATA] [--model MODEL_DIR]``: napari with the slide and the squint docks."""

from __future__ import annotations

from napari_squint.cli import common


def add_parser(sub) -> None:
    p = sub.add_parser("view", help="open napari with a slide, a model and the squint dock widgets")
    p.add_argument("data", nargs="?", default=None, help=".h5ad or SpatialData .zarr (optional)")
    p.add_argument("--model", default=None, help="trained model folder to load")
    p.add_argument("--layout", choices=["side", "single"], default="side",
                   help="sections side by side (default) or one at a time")
    common.add_slide_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    # napari is imported only through the plugin package, and only here: `squint --help` stays Qt-free
    from napari_squint._napari.launch import run_viewer

    section_key = "auto" if args.section_key == common.K.SECTION_KEY else common.section_key(args)
    run_viewer(args.data, model_dir=args.model, table=args.table, section_key=section_key, layer=args.layer,
               layout=args.layout)
    return 0
