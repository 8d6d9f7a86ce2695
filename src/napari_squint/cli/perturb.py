"""``squint perturb MODEL_DIR DATA --region POLYGONS.geojson --replace TYPE --prototype TYPE --responders TYPE --out DIR``.

The cells of type ``--replace`` inside the polygons get the mean profile of
all cells of type ``--prototype`` (scaled to each replaced cell's library,
``--scale``); tokens are recomputed for every cell that can change, and the
token transitions of ``--responders`` cells with a perturbed neighbour are
written to DIR: ``transitions.csv`` (counts, diagonal excluded),
``transition_proportions.csv`` (row-normalised), ``token_proportions.csv``
(before / after), ``changed_cells.csv``, ``summary.json`` and
``figures/{transitions,proportions,map}.png``; ``--write-h5ad`` adds
``perturbed.h5ad`` with ``obs['squint_token_before' / 'squint_token_after' /
'squint_perturbed']``. DATA is never modified.
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_squint import _constants as K
from napari_squint.cli import common
from napari_squint.cli.explain import add_dpi_option


def add_parser(sub) -> None:
    p = sub.add_parser("perturb", help="replace a cell type's expression in a region and track token changes")
    p.add_argument("model_dir")
    p.add_argument("data")
    p.add_argument("--region", required=True, help="GeoJSON polygons (with a 'section' property per polygon)")
    p.add_argument("--replace", required=True, metavar="CELL_TYPE", help="cell type to perturb inside the region")
    p.add_argument("--prototype", required=True, metavar="CELL_TYPE",
                   help="cell type whose mean profile (over the whole slide) replaces them")
    p.add_argument("--responders", required=True, metavar="CELL_TYPE",
                   help="cell type whose transitions are tabulated (those with a perturbed neighbour)")
    p.add_argument("--cell-type-key", default=K.CELL_TYPE_KEY)
    p.add_argument("--scale", choices=["library", "none"], default="library",
                   help="library: prototype proportions x each cell's library (default); none: prototype as is")
    p.add_argument("--sample", action="store_true", help="draw Poisson counts around the prototype (seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--write-h5ad", action="store_true", help="also write DIR/perturbed.h5ad with the obs columns")
    p.add_argument("--device", default=None)
    add_dpi_option(p)
    p.add_argument("--align-genes", action="store_true")
    common.add_slide_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from napari_squint.io.geojson import read_polygons

    regions = read_polygons(args.region)
    with common.output_folder(args, "perturb") as out:  # a failed run leaves no folder behind
        info = _run(args, out, regions)
    print(json.dumps(info, indent=1, default=str))
    return 0


def _run(args, out: Path, regions) -> dict:
    from napari_squint.cli.explain import save_figure
    from napari_squint.io.write import write_h5ad
    from napari_squint.plot.perturb import plot_perturbation_map, plot_token_proportions, plot_transitions
    from napari_squint.tasks.perturb import perturb, select_cells

    (out / "figures").mkdir(parents=True, exist_ok=True)
    model = common.load_model(args.model_dir, device=args.device)
    adata = common.read(args, args.data)
    sk = common.section_key(args)
    key = args.cell_type_key
    cells = select_cells(adata, regions=regions, cell_type=args.replace, cell_type_key=key, section_key=sk,
                         spatial_key=args.spatial_key)
    if not cells.any():
        raise ValueError(f"no {args.replace!r} cell inside {args.region}")
    proto = select_cells(adata, cell_type=args.prototype, cell_type_key=key)
    resp = select_cells(adata, cell_type=args.responders, cell_type_key=key)
    res = perturb(model, adata, cells=cells, prototype=proto, responders=resp, scale=args.scale,
                  sample=args.sample, seed=args.seed, align=args.align_genes, write=args.write_h5ad, copy=True)
    res.transitions.to_csv(out / "transitions.csv")
    res.transition_proportions.to_csv(out / "transition_proportions.csv")
    res.token_proportions.to_csv(out / "token_proportions.csv")
    ch = res.changed.copy()
    if key in adata.obs:
        ch["cell_type"] = adata.obs[key].astype(str).to_numpy()[ch["index"].to_numpy()]
    ch.to_csv(out / "changed_cells.csv", index=False)
    title = f"{args.responders} near perturbed {args.replace} ({args.replace} -> mean {args.prototype})"
    files = {
        "transitions": save_figure(plot_transitions(res, title=f"transitions: {title}"),
                                   out / "figures" / "transitions.png", dpi=args.dpi),
        "map": save_figure(plot_perturbation_map(adata, res, section_key=sk, spatial_key=args.spatial_key,
                                                 region=regions), out / "figures" / "map.png", dpi=args.dpi),
    }
    if res.n_responders:
        files["proportions"] = save_figure(plot_token_proportions(res, title=f"tokens of {args.responders} "
                                                                             f"(n={res.n_responders})"),
                                           out / "figures" / "proportions.png", dpi=args.dpi)
    if args.write_h5ad:
        write_h5ad(res.adata, out / "perturbed.h5ad")
        files["h5ad"] = str(out / "perturbed.h5ad")
    info = {**res.params, "replace": args.replace, "prototype": args.prototype, "responders": args.responders,
            "region": str(args.region), "files": files,
            "fraction_responders_changed": (res.n_changed_responders / res.n_responders) if res.n_responders else 0.0}
    info = common.final_paths(info, out, args.out)
    (out / "summary.json").write_text(json.dumps(info, indent=1, default=str))
    return info
