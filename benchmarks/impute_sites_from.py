"""The Table 2 protocol with the held-out sites chosen on other coordinates than the graphs.

On a 3D block, ``squint benchmark impute --spatial-key spatial_3d`` chooses its patches (balls, cut by the slab's
faces) and builds every graph in 3D; the 2D-projection run chooses discs on (x, y). The two runs therefore hold out
different cells. This script runs the 3D pipeline on the cells the 2D protocol holds out, so that the two are
compared on the same test cells (the cell profile X is then the same target; X_nbr still follows each run's graph).

    PYTHONPATH=src .venv/bin/python benchmarks/impute_sites_from.py ../shared/data/starmap3d_visualcortex_wang2018.h5ad \
        --site-key spatial --spatial-key spatial_3d --out /tmp/starmap3d_xyz_on_xy_sites

Settings are those of the generalisation protocol (20 epochs, heads=8, lambda_cell=2.0, SQuINT (context), one thread).
"""

from __future__ import annotations

import argparse


def main(argv=None) -> None:
    import anndata as ad

    import napari_squint.tasks.holdout as holdout
    from napari_squint.tasks.benchmark_impute import benchmark_impute, write_results

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--site-key", required=True, help="obsm key the held-out sites are chosen on")
    p.add_argument("--spatial-key", required=True, help="obsm key of every graph (training, baselines, scoring)")
    p.add_argument("--section-key", default="section")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    choose = holdout.choose_sites
    # benchmark_impute imports choose_sites from the module at call time: route it to the site coordinates
    holdout.choose_sites = lambda adata, **kw: choose(adata, **{**kw, "spatial_key": a.site_key})
    adata = ad.read_h5ad(a.data)
    res = benchmark_impute(adata, sites="patches", seeds=[a.seed], epochs=a.epochs, variants={"SQuINT": {}},
                           impute_methods=["context"], section_key=a.section_key, spatial_key=a.spatial_key,
                           options={"heads": 8, "lambda_cell": 2.0, "num_threads": 1})
    res["config"]["site_key"] = a.site_key
    res["config"]["spatial_key"] = a.spatial_key
    print("wrote", *write_results(res, a.out, stem="impute_patches"))


if __name__ == "__main__":
    main()
