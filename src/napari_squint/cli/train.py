"""``squint train DATA --out MODEL_DIR``."""

from __future__ import annotations

import json

from napari_squint.cli import common


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a SQuINT (or CIFM) model on a slide")
    p.add_argument("data", help=".h5ad or SpatialData .zarr")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--model", choices=["squint", "cifm"], default="squint")
    p.add_argument("--genes", default="all",
                   help="'all', the number of highly variable genes, or comma-separated gene names")
    p.add_argument("--epochs", type=common.positive_int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--codebook-size", type=common.positive_int, default=None)
    p.add_argument("--heads", type=common.positive_int, default=None)
    p.add_argument("--k", type=common.positive_int, default=None, help="nearest neighbours (default 8)")
    p.add_argument("--batch-size", type=common.positive_int, default=None)
    p.add_argument("--input-genes", type=common.positive_int, default=None,
                   help="SQuINT: the encoder reads only the N most variable genes; every gene is still predicted "
                        "(for wide panels whose model collapses; docs/benchmarks.md)")
    p.add_argument("--val-frac", type=float, default=None,
                   help="CIFM: share of the training cells (whole tiles) kept out of the loss to choose the "
                        "training length (default 0.1; 0: exactly --epochs epochs, every cell trained on)")
    p.add_argument("--no-covariates", action="store_true", help="the 'SQuINT w/o C' ablation")
    p.add_argument("--zero-mask", action="store_true", help="the zero-mask ablation (no learnable mask token)")
    p.add_argument("--holdout", default=None, help="GeoJSON polygons whose cells are excluded from training")
    p.add_argument("--distributed", action="store_true", help="data-parallel training under torchrun")
    common.add_slide_options(p)
    p.set_defaults(run=run)


def options(args) -> dict:
    opts = {"seed": args.seed, "device": args.device}
    for name in ("epochs", "codebook_size", "heads", "k", "batch_size", "input_genes", "val_frac"):
        v = getattr(args, name, None)
        if v is not None:
            opts[name] = v
    if args.no_covariates:
        opts["use_covariates"] = False
    if args.zero_mask:
        opts["learnable_mask"] = False
    return opts


def run(args) -> int:
    from napari_squint.cli.progress import TerminalProgress
    from napari_squint.io.outputs import check_output

    # before any work: never onto or around an input, never over a folder the tool did not write
    check_output(args.out, inputs=common.inputs(args), overwrite=args.overwrite, folder=True)
    adata = common.read(args, args.data)
    holdout = None
    if args.holdout:
        from napari_squint.io.geojson import cells_in_regions, read_polygons

        holdout = cells_in_regions(adata, read_polygons(args.holdout), section_key=common.section_key(args),
                                   spatial_key=args.spatial_key)
        print(f"holding out {int(holdout.sum())} cells inside {args.holdout}")
    genes = common.parse_genes(args.genes, adata)
    from napari_squint.api.load import model_classes

    cls = model_classes()[args.model]  # --model names a model class (its kind)
    if args.distributed:
        from napari_squint.train.distributed import DistributedRun, train_distributed

        if not cls.distributed_training:
            raise ValueError(f"--distributed is not available for {cls.label} (--model {args.model})")
        run_ = DistributedRun(out=args.out, section_key=common.section_key(args), spatial_key=args.spatial_key,
                              genes=genes, holdout=holdout, allow_non_counts=args.allow_non_counts,
                              overwrite=args.overwrite, options=options(args))
        path = train_distributed(adata, run_, callback=TerminalProgress())
        if path is not None:
            print(f"rank 0 wrote {path}")
        return 0
    model = cls(adata, section_key=common.section_key(args), spatial_key=args.spatial_key, genes=genes,
                holdout=holdout, allow_non_counts=args.allow_non_counts, **options(args))
    model.train(callback=TerminalProgress())
    path = model.save(args.out, overwrite=args.overwrite)
    summary = {"model": str(path), "history_last": model.history[-1] if model.history else None}
    print(json.dumps(summary, indent=1, default=float))
    return 0
