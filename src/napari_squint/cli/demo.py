"""``squint demo [--data DATA] [--out DIR]``: the main job on built-in or given data."""

from __future__ import annotations

from napari_squint.cli import common


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train on the built-in synthetic tissue (or --data) and write a report folder")
    p.add_argument("--data", default=None, help="a slide to use instead of the synthetic tissue")
    p.add_argument("--out", default="squint_demo", help="report folder (default: squint_demo)")
    p.add_argument("--epochs", type=common.positive_int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--n-cells", type=common.positive_int, default=12000, help="synthetic tissue size")
    p.add_argument("--n-genes", type=common.positive_int, default=200, help="synthetic tissue genes")
    p.add_argument("--cell-type-key", default="cell_type")
    common.add_slide_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from napari_squint.cli.progress import TerminalProgress
    from napari_squint.tasks.demo import run_demo
    from napari_squint.train.events import drive

    adata = common.read(args, args.data) if args.data else None
    with common.output_folder(args, "demo") as out:  # built beside --out, swapped in when complete
        summary, _ = drive(run_demo(out, adata=adata, section_key=common.section_key(args),
                                    spatial_key=args.spatial_key, cell_type_key=args.cell_type_key, epochs=args.epochs,
                                    seed=args.seed, device=args.device, n_cells=args.n_cells, n_genes=args.n_genes),
                           callback=TerminalProgress())
    print(f"demo done: {args.out}/report.md  (tokens used: {summary['codebook']['tokens_used']}, "
          f"utilisation {summary['codebook']['utilisation']:.2f})")
    return 0
