"""``squint stack MODEL_DIR DATA --z-key K --out DIR``: 3D imputation report of a z-stack.

Held-out cells must never be seen in training, so this command trains a new
model; MODEL_DIR supplies its *settings*, not its weights: the configuration
(architecture, graph ``k``, optimiser, epochs, seed) and the gene list are
reused, every level of the stack becomes a section (graph and batch id of its
own), and ``--epochs`` overrides the epoch count. Use ``--filter`` /
``--z-range`` to select one stack from a larger file.

Writes into DIR: ``report_<graph>_x.csv`` and ``report_<graph>_x_nbr.csv``
(levels x gene groups, mean per-gene Pearson of held-out cells),
``baseline_<graph>_x*.csv`` (the same for the k-nearest-observed-neighbours average),
``genes_<graph>.csv`` (global ranking), ``comparison.csv`` (per graph,
method and space, the mean over levels), ``cooccurrence_*.csv`` (token usage across
levels, from the stack model), ``figures/stack_report.png``,
``figures/cooccurrence.png``, ``model_<graph>/`` and ``summary.json``.
The co-occurrence map uses the tokens of the first graph's model. ``model_3d/``
holds the weights trained on the 3D graph, but ``Squint.load`` rebuilds
per-level graphs: the 3D graph exists only inside this command.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_squint import _constants as K
from napari_squint.cli import common
from napari_squint.cli.explain import add_dpi_option


def add_parser(sub) -> None:
    p = sub.add_parser("stack", help="train across a z-stack with 10%% held-out cells per level; per-level report")
    p.add_argument("model_dir", help="model folder whose config and genes are reused (its weights are not)")
    p.add_argument("data")
    p.add_argument("--z-key", default=K.Z_KEY, help="obs column (or obsm key, last column) of the z position")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="keep cells with obs[KEY] == VALUE (repeatable), e.g. animal_id=1")
    p.add_argument("--z-range", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                   help="keep levels with LO <= z <= HI")
    p.add_argument("--epochs", type=common.positive_int, default=None, help="override the model's epochs")
    p.add_argument("--holdout-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out draw")
    p.add_argument("--gene-groups", nargs="+", default=["10", "20", "50", "all"],
                   help="top-k gene group sizes ('all' for every gene)")
    p.add_argument("--graph-3d", action="store_true",
                   help="also train on a 3D kNN graph linking adjacent levels and report both")
    p.add_argument("--z-scale", type=float, default=None, help="factor on z for the 3D graph (default: automatic)")
    p.add_argument("--top-n", type=common.positive_int, default=50, help="tokens in the co-occurrence map")
    p.add_argument("--device", default=None)
    add_dpi_option(p)
    common.add_slide_options(p)
    p.set_defaults(run=run)


def _subset(adata, filters, z_range, z):
    keep = np.ones(adata.n_obs, dtype=bool)
    for f in filters:
        if "=" not in f:
            raise ValueError(f"--filter {f!r} must look like KEY=VALUE")
        key, value = f.split("=", 1)
        if key not in adata.obs:
            raise KeyError(f"--filter key {key!r} not found in adata.obs")
        keep &= (adata.obs[key].astype(str) == value).to_numpy()
    if z_range is not None:
        lo, hi = sorted(z_range)
        keep &= (z >= lo) & (z <= hi)
    if not keep.any():
        raise ValueError("the filters keep no cell")
    return adata[keep].copy() if not keep.all() else adata


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    with common.output_folder(args, "stack") as out:  # a failed run leaves no folder behind
        info = _run(args, out)
    print(json.dumps(info, indent=1, default=float))
    return 0


def _run(args, out: Path):
    from napari_squint.cli.explain import save_figure
    from napari_squint.cli.progress import TerminalProgress
    from napari_squint.plot.stack import plot_stack_report
    from napari_squint.plot.tokens import plot_cooccurrence
    from napari_squint.tasks.explain import token_cooccurrence
    from napari_squint.tasks.stack import stack_imputation, z_levels

    (out / "figures").mkdir(parents=True, exist_ok=True)
    template = common.load_model(args.model_dir, device=args.device)
    adata = common.read(args, args.data)
    adata = _subset(adata, args.filter, args.z_range, z_levels(adata, args.z_key))
    groups = [None if str(g).lower() == "all" else int(g) for g in args.gene_groups]
    opts = {}
    if args.epochs is not None:
        opts["epochs"] = args.epochs
    if args.device is not None:
        opts["device"] = args.device
    graphs = ["section", "3d"] if args.graph_3d else ["section"]
    res = stack_imputation(adata, z_key=args.z_key, spatial_key=args.spatial_key, layer=args.layer,
                           template=template, holdout_fraction=args.holdout_fraction, seed=args.seed,
                           gene_groups=groups, graphs=graphs, z_scale=args.z_scale,
                           allow_non_counts=args.allow_non_counts, callback=TerminalProgress(), **opts)
    if res is None:
        raise KeyboardInterrupt
    files = {}
    for g, rep in res.reports.items():
        rep.x.to_csv(out / f"report_{g}_x.csv")
        rep.x_nbr.to_csv(out / f"report_{g}_x_nbr.csv")
        if rep.baseline_x is not None:
            rep.baseline_x.to_csv(out / f"baseline_{g}_x.csv")
            rep.baseline_x_nbr.to_csv(out / f"baseline_{g}_x_nbr.csv")
        rep.genes.to_csv(out / f"genes_{g}.csv")
        rep.model.save(out / f"model_{g}")
    comp = res.comparison()
    comp.to_csv(out / "comparison.csv", index=False)
    files["report"] = save_figure(plot_stack_report(res), out / "figures" / "stack_report.png", dpi=args.dpi)
    first = next(iter(res.reports.values()))
    adata.obs[K.TOKEN_KEY] = first.tokens
    zcol = "_z_level"
    adata.obs[zcol] = z_levels(adata, args.z_key)
    cooc = token_cooccurrence(adata, level_key=zcol, top_n=args.top_n)
    cooc.usage.to_csv(out / "cooccurrence_usage.csv")
    cooc.correlation.loc[cooc.order, cooc.order].to_csv(out / "cooccurrence_correlation.csv")
    files["cooccurrence"] = save_figure(
        plot_cooccurrence(cooc, title=f"token co-occurrence across {len(res.levels)} z levels "
                                      f"(top {len(cooc.order)} tokens)"), out / "figures" / "cooccurrence.png", dpi=args.dpi)
    info = {"levels": res.levels, "n_cells": int(adata.n_obs), "n_heldout": int(res.heldout.sum()),
            "template": str(args.model_dir), "epochs": first.model.config.train.epochs,
            "graph_stats": {g: r.graph_stats for g, r in res.reports.items()},
            "mean_over_levels": comp.to_dict("records"), "files": files}
    info = common.final_paths(info, out, args.out)
    (out / "summary.json").write_text(json.dumps(info, indent=1, default=float))
    return info
