"""``squint stratify MODEL_DIR DATA --condition COL --group VALUE [--top-k 5] --out OUT.h5ad``.

Writes OUT.h5ad (a copy of DATA with ``obs['squint_token']``,
``obs['squint_activation']`` in [0, 1] and ``uns['squint']['stratify']``: the
top tokens, the enrichment, composition and DE tables) and, beside it,
``<stem>_enrichment.csv``, ``<stem>_composition.csv``, ``<stem>_de.csv`` and
figures ``<stem>_activation.png``, ``<stem>_composition.png``,
``<stem>_volcano.png``, ``<stem>_tokens.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_squint import _constants as K
from napari_squint.cli import common
from napari_squint.cli.explain import add_dpi_option


def add_parser(sub) -> None:
    p = sub.add_parser("stratify", help="activation score of the top tokens of a group (tumour stratification)")
    p.add_argument("model_dir")
    p.add_argument("data")
    p.add_argument("--condition", required=True, help="obs column of the condition (patient, animal...)")
    p.add_argument("--group", required=True, help="the target group's value in that column")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--method", choices=["frequency", "enrichment"], default="frequency",
                   help="frequency: most used tokens of the group (paper); enrichment: most enriched vs the "
                        "other groups (Fisher exact, BH)")
    p.add_argument("--min-log2-odds", type=float, default=1.0, help="enrichment: minimum log2 odds ratio")
    p.add_argument("--cell-type-key", default=K.CELL_TYPE_KEY)
    p.add_argument("--de-cell-type", default="auto",
                   help="cell type for high-vs-low DE genes: a value, 'auto' (most enriched in high cells) or 'none'")
    p.add_argument("--low", type=float, default=0.25)
    p.add_argument("--high", type=float, default=0.75)
    p.add_argument("--out", required=True, help="output .h5ad (the input is never modified)")
    p.add_argument("--device", default=None)
    add_dpi_option(p)
    p.add_argument("--align-genes", action="store_true")
    common.add_slide_options(p)
    p.set_defaults(run=run)


def _auto_cell_type(composition, min_cells: int = 10):
    if composition is None:
        return None
    ok = composition[(composition["n_low"] >= min_cells) & (composition["n_high"] >= min_cells)]
    return None if ok.empty else str(ok.sort_values("log2_ratio", ascending=False).index[0])


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from napari_squint.cli.explain import save_figure
    from napari_squint.io.write import write_h5ad
    from napari_squint.plot.stratify import plot_activation, plot_composition, plot_enrichment, plot_volcano
    from napari_squint.tasks.stratify import stratify

    out = Path(args.out)
    if out.suffix != ".h5ad":
        raise ValueError(f"--out {out} must end in .h5ad")
    model = common.load_model(args.model_dir, device=args.device)
    adata = common.read(args, args.data)
    model.tokens(adata, align=args.align_genes)
    ct_key = args.cell_type_key if args.cell_type_key in adata.obs else None
    de_type = None if str(args.de_cell_type).lower() in ("none", "auto") else args.de_cell_type
    kw = dict(condition_key=args.condition, group=args.group, model=model, top_k=args.top_k, method=args.method,
              min_log2_odds=args.min_log2_odds, cell_type_key=ct_key, low=args.low, high=args.high,
              section_key=common.section_key(args), spatial_key=args.spatial_key)
    res = stratify(adata, de_cell_type=de_type, **kw)
    if str(args.de_cell_type).lower() == "auto" and ct_key:
        auto = _auto_cell_type(res.composition)
        if auto is not None:
            res = stratify(adata, de_cell_type=auto, **kw)
    write_h5ad(adata, out)
    stem = out.with_suffix("")
    base = stem.name
    res.enrichment.to_csv(stem.parent / f"{base}_enrichment.csv")
    files = {"h5ad": str(out)}
    sk = common.section_key(args)
    files["activation"] = save_figure(plot_activation(adata, section_key=sk, spatial_key=args.spatial_key,
                                                      group_key=args.condition,
                                                      title=f"activation: top-{args.top_k} tokens of "
                                                            f"{args.condition}={args.group} ({args.method})"),
                                      stem.parent / f"{base}_activation.png", dpi=args.dpi)
    files["tokens"] = save_figure(plot_enrichment(res.enrichment, res.top_tokens,
                                                  title=f"token usage: {args.condition}={args.group} vs rest"),
                                  stem.parent / f"{base}_tokens.png", dpi=args.dpi)
    if res.composition is not None:
        res.composition.to_csv(stem.parent / f"{base}_composition.csv")
        if res.composition["n_high"].sum() and res.composition["n_low"].sum():
            files["composition"] = save_figure(plot_composition(res.composition, low=args.low, high=args.high),
                                               stem.parent / f"{base}_composition.png", dpi=args.dpi)
    if res.de is not None:
        res.de.to_csv(stem.parent / f"{base}_de.csv", index=False)
        files["volcano"] = save_figure(plot_volcano(res.de), stem.parent / f"{base}_volcano.png", dpi=args.dpi)
    a = res.activation
    info = {"top_tokens": [str(t) for t in res.top_tokens], "method": res.method,
            "n_low": int((a < args.low).sum()), "n_high": int((a > args.high).sum()),
            "mean_activation_group": float(a[(adata.obs[args.condition].astype(str) == str(args.group)).to_numpy()].mean()),
            "mean_activation_other": float(a[(adata.obs[args.condition].astype(str) != str(args.group)).to_numpy()].mean()),
            "de_cell_type": res.params.get("de_cell_type"), "files": files}
    (stem.parent / f"{base}_summary.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    return 0
