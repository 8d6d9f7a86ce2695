"""``squint demo [--data DATA | --synthetic] [--out DIR]``: the main job on the shipped real slide, or given data."""

from __future__ import annotations

from napari_squint.cli import common


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train on the shipped real slide (MERFISH hypothalamus, 2 sections; or --data, "
                                    "--synthetic), in-paint a held-out patch and write a report folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", default=None, help="a slide to use instead of the shipped MERFISH slide")
    src.add_argument("--synthetic", action="store_true", help="use the synthetic generator instead (--n-cells, "
                                                             "--n-genes)")
    p.add_argument("--out", default="squint_demo", help="report folder (default: squint_demo)")
    p.add_argument("--epochs", type=common.positive_int, default=None, help="training epochs (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--n-cells", type=common.positive_int, default=12000, help="synthetic tissue size")
    p.add_argument("--n-genes", type=common.positive_int, default=200, help="synthetic tissue genes")
    p.add_argument("--cell-type-key", default="cell_type")
    common.add_slide_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from napari_squint.cli.progress import TerminalProgress
    from napari_squint.tasks.demo import DEMO_EPOCHS, run_demo
    from napari_squint.train.events import drive

    adata = common.read(args, args.data) if args.data else None
    with common.output_folder(args, "demo") as out:  # built beside --out, swapped in when complete
        summary, _ = drive(run_demo(out, adata=adata, synthetic=args.synthetic, section_key=common.section_key(args),
                                    spatial_key=args.spatial_key, cell_type_key=args.cell_type_key,
                                    epochs=args.epochs or DEMO_EPOCHS,
                                    seed=args.seed, device=args.device, n_cells=args.n_cells, n_genes=args.n_genes),
                           callback=TerminalProgress())
    print(f"demo done: {args.out}/report.md  (tokens used: {summary['codebook']['tokens_used']}, "
          f"utilisation {summary['codebook']['utilisation']:.2f})")
    return 0
