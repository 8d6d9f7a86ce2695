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
    p.add_argument("--top-k", type=common.positive_int, default=5)
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


def _outputs(out: Path) -> dict[str, Path]:
    """Every file the command may write: OUT.h5ad and its siblings named after OUT's stem."""
    stem = out.with_suffix("")
    names = {"h5ad": out}
    for key, suffix in (("enrichment", "_enrichment.csv"), ("composition_csv", "_composition.csv"),
                        ("de", "_de.csv"), ("activation", "_activation.png"), ("tokens", "_tokens.png"),
                        ("composition", "_composition.png"), ("volcano", "_volcano.png"),
                        ("summary", "_summary.json")):
        names[key] = stem.parent / f"{stem.name}{suffix}"
    return names


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from napari_squint.cli.explain import save_figure
    from napari_squint.io.outputs import OutputFiles
    from napari_squint.plot.stratify import plot_activation, plot_composition, plot_enrichment, plot_volcano
    from napari_squint.tasks.stratify import stratify

    out = Path(args.out)
    if out.suffix != ".h5ad":
        raise ValueError(f"--out {out} must end in .h5ad")
    paths = _outputs(out)
    staged = OutputFiles(inputs=common.inputs(args), overwrite=args.overwrite)
    for p in paths.values():  # before any work: no file the tool did not write is ever replaced
        staged.check(p)
    model = common.load_model(args.model_dir, device=args.device)
    adata = common.read(args, args.data)
    if args.condition not in adata.obs:
        raise ValueError(f"--condition {args.condition!r} is not a column of obs in {args.data} "
                         f"(available: {list(map(str, adata.obs.columns))})")
    groups = adata.obs[args.condition].astype(str)
    if not (groups == str(args.group)).any():
        values = sorted(set(groups))
        raise ValueError(f"--group {args.group!r} is not a value of obs[{args.condition!r}] in {args.data} "
                         f"(values: {values[:20]}{' ...' if len(values) > 20 else ''})")
    with staged:  # every file is staged, then all are renamed into place; a failure leaves none behind
        info = _run(args, model, adata, paths, staged, save_figure, stratify,
                    (plot_activation, plot_composition, plot_enrichment, plot_volcano))
    print(json.dumps(info, indent=1))
    return 0


def _run(args, model, adata, paths, staged, save_figure, stratify, plots) -> dict:
    plot_activation, plot_composition, plot_enrichment, plot_volcano = plots
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
    adata.write_h5ad(staged.add(paths["h5ad"]))
    res.enrichment.to_csv(staged.add(paths["enrichment"]))
    files = {"h5ad": str(paths["h5ad"])}
    sk = common.section_key(args)
    files["activation"] = save_figure(plot_activation(adata, section_key=sk, spatial_key=args.spatial_key,
                                                      group_key=args.condition,
                                                      title=f"activation: top-{args.top_k} tokens of "
                                                            f"{args.condition}={args.group} ({args.method})"),
                                      paths["activation"], dpi=args.dpi, files=staged)
    files["tokens"] = save_figure(plot_enrichment(res.enrichment, res.top_tokens,
                                                  title=f"token usage: {args.condition}={args.group} vs rest"),
                                  paths["tokens"], dpi=args.dpi, files=staged)
    if res.composition is not None:
        res.composition.to_csv(staged.add(paths["composition_csv"]))
        if res.composition["n_high"].sum() and res.composition["n_low"].sum():
            files["composition"] = save_figure(plot_composition(res.composition, low=args.low, high=args.high),
                                               paths["composition"], dpi=args.dpi, files=staged)
    if res.de is not None:
        res.de.to_csv(staged.add(paths["de"]), index=False)
        files["volcano"] = save_figure(plot_volcano(res.de), paths["volcano"], dpi=args.dpi, files=staged)
    a = res.activation
    in_group = (adata.obs[args.condition].astype(str) == str(args.group)).to_numpy()
    info = {"top_tokens": [str(t) for t in res.top_tokens], "method": res.method,
            "n_low": int((a < args.low).sum()), "n_high": int((a > args.high).sum()),
            "mean_activation_group": float(a[in_group].mean()),
            "mean_activation_other": float(a[~in_group].mean()) if (~in_group).any() else float("nan"),
            "de_cell_type": res.params.get("de_cell_type"), "files": files}
    staged.add(paths["summary"]).write_text(json.dumps(info, indent=1))
    return info
