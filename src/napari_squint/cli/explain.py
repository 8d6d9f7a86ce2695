"""``squint explain MODEL_DIR DATA --out DIR [--programme GENES...]``: what every token means.

Writes into DIR:

* ``tokens_summary.csv`` (per token: cells, sections, top cell type / condition, markers),
* ``composition_<column>.csv`` (tokens x sections / conditions / cell types, counts),
* ``markers.csv`` (scanpy ``rank_genes_groups``, each token vs the rest),
* ``mean_expression.csv`` (tokens x genes, mean log-normalised expression),
* ``programme.csv`` (dot-plot table of ``--programme`` genes), when given,
* ``cooccurrence_usage.csv`` / ``cooccurrence_correlation.csv`` (across ``--level-key`` levels),
* ``figures/*.png`` and ``summary.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_squint import _constants as K
from napari_squint.cli import common


def save_figure(fig, path: Path, *, dpi: int = 110, files=None) -> str:
    """Save and close a matplotlib figure as a 256-colour PNG (small files), atomically; returns the path.

    ``files``: an :class:`~napari_squint.io.outputs.OutputFiles` to stage the file in (published with the
    command's other outputs); otherwise it is written to a temporary sibling and renamed onto ``path``.
    """
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    from napari_squint.io.outputs import atomic_path

    path = Path(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    if files is not None:
        img.save(files.add(path), format="PNG", optimize=True)
    else:
        with atomic_path(path, record=False) as tmp:
            img.save(tmp, format="PNG", optimize=True)
    return str(path)


def add_dpi_option(p) -> None:
    p.add_argument("--dpi", type=common.positive_int, default=110, help="resolution of the PNG figures (default 110)")


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="per-token composition, marker genes, programme dot plot, co-occurrence")
    p.add_argument("model_dir")
    p.add_argument("data")
    p.add_argument("--out", required=True, help="output folder (tables and figures)")
    p.add_argument("--programme", nargs="+", default=None, metavar="GENE", help="gene programme for the dot plot")
    p.add_argument("--programme-cell-type", default=None,
                   help="restrict the dot plot to cells of this type (e.g. macrophages)")
    p.add_argument("--cell-type-key", default=K.CELL_TYPE_KEY, help="obs column of cell types (default: cell_type)")
    p.add_argument("--condition-key", default=None, help="obs column of conditions (optional)")
    p.add_argument("--level-key", default=None,
                   help="obs column of levels for the co-occurrence map (default: the section key; e.g. z)")
    p.add_argument("--top-n", type=common.positive_int, default=50, help="tokens in the co-occurrence map (default 50)")
    p.add_argument("--n-markers", type=common.positive_int, default=10)
    p.add_argument("--device", default=None)
    p.add_argument("--align-genes", action="store_true", help="fill genes the slide lacks with zeros")
    add_dpi_option(p)
    common.add_slide_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    with common.output_folder(args, "explain") as out:
        info = _run(args, out)
    info = common.final_paths(info, out, args.out)
    print(f"wrote {args.out}: {info['n_tokens']} tokens over {info['n_cells']} cells")
    return 0


def _run(args, out: Path) -> dict:
    from napari_squint.plot.tokens import (
        plot_cooccurrence,
        plot_programme_dotplot,
        plot_token_composition,
        plot_token_markers,
    )
    from napari_squint.tasks.explain import explain_tokens, programme_table, token_cooccurrence

    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    model = common.load_model(args.model_dir, device=args.device)
    adata = common.read(args, args.data)
    model.tokens(adata, align=args.align_genes)
    sk = common.section_key(args)
    ct_key = args.cell_type_key if args.cell_type_key in adata.obs else None
    summary = explain_tokens(adata, section_key=sk, condition_key=args.condition_key, cell_type_key=ct_key,
                             n_markers=args.n_markers)
    summary.summary.to_csv(out / "tokens_summary.csv")
    summary.markers.to_csv(out / "markers.csv", index=False)
    summary.mean_expression.to_csv(out / "mean_expression.csv")
    written = {"tokens_summary": str(out / "tokens_summary.csv")}
    for name, tab in (("sections", summary.sections), ("conditions", summary.conditions),
                      ("cell_types", summary.cell_types)):
        if tab is not None:
            tab.to_csv(out / f"composition_{name}.csv")
    if summary.cell_types is not None:
        written["fig_composition"] = save_figure(plot_token_composition(summary.cell_types, label=ct_key),
                                                 figs / "token_cell_types.png", dpi=args.dpi)
    try:
        written["fig_markers"] = save_figure(plot_token_markers(summary), figs / "token_markers.png", dpi=args.dpi)
    except ValueError:
        pass
    if args.programme:
        cells = None
        if args.programme_cell_type:
            if ct_key is None:
                raise ValueError(f"--programme-cell-type needs cell types, but {args.cell_type_key!r} is not in obs")
            cells = (adata.obs[ct_key].astype(str) == args.programme_cell_type).to_numpy()
            if not cells.any():
                raise ValueError(f"no cell of type {args.programme_cell_type!r} in obs[{ct_key!r}]")
        table = programme_table(adata, args.programme, cells=cells, min_cells=10 if cells is None else 3)
        top = list(table.groupby("token", sort=False)["n_cells"].first().sort_values(ascending=False).index[:25])
        table.to_csv(out / "programme.csv", index=False)
        sub = f" in {args.programme_cell_type}" if args.programme_cell_type else ""
        written["fig_programme"] = save_figure(
            plot_programme_dotplot(table, tokens=top, title=f"programme across tokens{sub}"),
            figs / "programme_dotplot.png", dpi=args.dpi)
    level_key = args.level_key or sk
    cooc = None
    if level_key and level_key in adata.obs and adata.obs[level_key].nunique() >= 2:
        cooc = token_cooccurrence(adata, level_key=level_key, top_n=args.top_n)
        cooc.usage.to_csv(out / "cooccurrence_usage.csv")
        cooc.correlation.loc[cooc.order, cooc.order].to_csv(out / "cooccurrence_correlation.csv")
        written["fig_cooccurrence"] = save_figure(plot_cooccurrence(cooc), figs / "cooccurrence.png", dpi=args.dpi)
    info = {"n_cells": int(adata.n_obs), "n_tokens": int(summary.summary.shape[0]),
            "tokens_too_small_for_markers": len(summary.too_small),
            "top_tokens": summary.summary.head(10).reset_index().astype(str).to_dict("records"),
            "cooccurrence_levels": int(cooc.usage.shape[0]) if cooc is not None else 0, "files": written}
    (out / "summary.json").write_text(json.dumps(common.final_paths(info, out, args.out), indent=1))
    return info
