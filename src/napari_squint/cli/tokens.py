"""``squint tokens MODEL_DIR DATA --out OUT.h5ad``."""

from __future__ import annotations

from napari_squint.cli import common


def add_parser(sub) -> None:
    p = sub.add_parser("tokens", help="assign every cell a token with a trained model")
    p.add_argument("model_dir")
    p.add_argument("data")
    p.add_argument("--out", required=True, help="output .h5ad (the input is never modified)")
    p.add_argument("--device", default=None)
    p.add_argument("--align-genes", action="store_true", help="fill genes the slide lacks with zeros")
    common.add_slide_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from napari_squint.io.outputs import check_output
    from napari_squint.io.write import write_h5ad

    check_output(args.out, inputs=common.inputs(args), overwrite=args.overwrite)  # before any work
    model = common.load_model(args.model_dir, device=args.device)
    adata = common.read(args, args.data)
    from napari_squint.cli.progress import TerminalProgress

    model.tokens(adata, align=args.align_genes, callback=TerminalProgress())
    write_h5ad(adata, args.out, overwrite=args.overwrite, inputs=common.inputs(args))
    print(f"wrote {args.out}: {adata.obs['squint_token'].nunique()} tokens used over {adata.n_obs} cells")
    return 0
