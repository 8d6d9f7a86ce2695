"""``squint impute MODEL_DIR DATA --polygons POLYGONS.geojson --out OUT.h5ad``."""

from __future__ import annotations

from napari_squint.cli import common


def add_parser(sub) -> None:
    p = sub.add_parser("impute", help="impute the cells inside polygons (fill empty ones) with a trained model")
    p.add_argument("model_dir", help="model folder written by `squint train`")
    p.add_argument("data", help=".h5ad or SpatialData .zarr (never modified)")
    p.add_argument("--polygons", required=True, help="GeoJSON polygons, each with a 'section' property")
    p.add_argument("--out", required=True, help="output .h5ad: the cells inside the polygons, with layers "
                                                 "'imputed' and 'imputed_nbr'")
    p.add_argument("--method", choices=["context", "infill", "oneshot"], default=None,
                   help="context (each cell read against its nearest observed cells; default for SQuINT), infill (from the "
                        "boundary inwards, ring by ring; default for CIFM) or oneshot (the paper's single pass on the slide's graph)")
    p.add_argument("--nbr", choices=["sum", "decoder"], default=None,
                   help="imputed_nbr as measured + imputed members (sum; default) or from the decoder head")
    p.add_argument("--draw", choices=["mean", "logmean", "sample"], default=None,
                   help="expected counts (mean), counts whose log-normalisation is the expected log-normalised "
                        "expression (logmean), or a draw as spread as real cells (sample, seeded by --seed: SQuINT "
                        "draws a token from the masked-code head, then negative-binomial counts; CIFM a measured "
                        "cell whose masked reconstruction matches the target's); default logmean for SQuINT, mean "
                        "for CIFM")
    p.add_argument("--no-residual", action="store_true",
                   help="leave out the local residual correction (the model's error on the measured "
                        "microenvironments nearest each cell, added on the log scale; on by default with --draw "
                        "logmean): the model's own prediction")
    p.add_argument("--no-fill", action="store_true", help="error on polygons holding no cell instead of filling them")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the placement of new cells in empty polygons and of --draw sample")
    p.add_argument("--device", default=None)
    p.add_argument("--align-genes", action="store_true", help="fill genes the slide lacks with zeros")
    common.add_slide_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from napari_squint.io.geojson import read_polygons
    from napari_squint.io.outputs import check_output
    from napari_squint.io.write import write_h5ad
    from napari_squint.tasks.impute import DEFAULT_NBR, Imputer

    check_output(args.out, inputs=common.inputs(args), overwrite=args.overwrite)  # before any work
    regions = read_polygons(args.polygons)
    model = common.load_model(args.model_dir, device=args.device)
    if not hasattr(model, "impute_cells"):
        raise ValueError(f"{args.model_dir} holds a model that cannot impute (needs a SQuINT model)")
    adata = common.read(args, args.data)
    out = Imputer(model, adata, align=args.align_genes).impute(
        regions=regions, method=args.method, nbr_mode=args.nbr or DEFAULT_NBR,
        fill_empty=not args.no_fill, seed=args.seed, draw=args.draw, residual=False if args.no_residual else None)
    out.uns["squint"]["impute"]["params"].update(model=str(args.model_dir), data=str(args.data),
                                                 polygons=str(args.polygons))
    write_h5ad(out, args.out, overwrite=args.overwrite, inputs=common.inputs(args))
    n_new = int(out.obs["squint_created"].sum())
    info = out.uns["squint"]["impute"]
    created = f" + {n_new} new cells in empty polygons" if n_new else ""
    print(f"wrote {args.out}: {out.n_obs - n_new} imputed cells{created} x {out.n_vars} genes "
          f"({info['params']['method']}, {info['seconds']:.2f}s)")
    return 0
