"""Interactive in-painting speed: one polygon of ~5,000 cells on a ~50,000-cell slide, CPU.

The slide is synthetic (``make_tissue``, one section, 135 genes like the
MERFISH panel) so the polygon can hold 5,000 cells of one section; the model
has the default architecture and is trained for one epoch (speed does not
depend on the weights). The :class:`~napari_squint.tasks.impute.Imputer`
prepares the slide once; the timed call is what the napari plugin runs each
time the user draws a polygon: find the cells inside, impute them (and their
1-hop neighbourhood only), and build the output AnnData. The residuals of the
measured cells around the polygon (:mod:`napari_squint.tasks.residual`) are
computed on the first polygon and cached; the first polygon on a fresh
Imputer is timed separately.

    python benchmarks/impute_speed.py [--cells 50000] [--polygon-cells 5000] [--repeats 5] [--threads 1]
    python benchmarks/impute_speed.py --model cifm ...   # CIFM: infill / oneshot, decoded mean / donor draw

Prints a JSON record: wall times per method and the CPU time of the process
(``time.process_time``; with one torch thread it is what the wall time would
be on an idle core, the honest figure on a shared machine), plus the load average.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=50_000)
    p.add_argument("--genes", type=int, default=135)
    p.add_argument("--polygon-cells", type=int, default=5_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the record here")
    p.add_argument("--model", choices=["squint", "cifm"], default="squint")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from shapely.geometry import Point
    from scipy.spatial import cKDTree

    from napari_squint.api.squint import Squint
    from napari_squint.data.synthetic import make_tissue
    from napari_squint.io.geojson import Region
    from napari_squint.tasks.impute import METHODS, Imputer

    t0 = time.perf_counter()
    adata = make_tissue(n_cells=args.cells, n_genes=args.genes, n_sections=1, seed=0)
    t_make = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.model == "cifm":
        from napari_squint.api.cifm import Cifm

        model = Cifm(adata, epochs=1, seed=0, val_frac=0.0)
    else:
        model = Squint(adata, epochs=1, seed=0, kmeans_cells=5000)
    model.train()
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    imputer = Imputer(model, adata)
    t_prepare = time.perf_counter() - t0
    # a disc around the slide's centre holding ~polygon_cells cells
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    centre = np.median(xy, axis=0)
    d, _ = cKDTree(xy).query(centre, k=args.polygon_cells)
    section = str(adata.obs["section"].iloc[0])
    region = Region(section, Point(centre).buffer(float(d[-1]) * 1.0005, quad_segs=32), "speed")
    import os

    record = {"model": args.model, "load_average": os.getloadavg(), "cells": adata.n_obs, "genes": adata.n_vars, "threads": args.threads,
              "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
              "seconds_make_tissue": t_make, "seconds_train_1_epoch": t_train, "seconds_prepare_once": t_prepare}
    if args.model == "cifm":  # CIFM has no residual by default and no context method
        runs = [(m, d, None) for d in ("mean", "sample") for m in model.impute_methods]
    else:
        runs = ([(m, "logmean", None) for m in METHODS] + [("context", "logmean", False)]
                + [(m, "mean", None) for m in METHODS] + [("context", "sample", None)])
    for method, draw, residual in runs:
        imputer.impute(regions=[region], method=method, draw=draw, residual=residual)  # warm-up
        times, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            out = imputer.impute(regions=[region], method=method, draw=draw, residual=residual)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        name = f"{method} {draw}" + (" w/o residual" if residual is False else "")
        record[name] = {"polygon_cells": int(out.n_obs), "rings": int(out.obs["squint_ring"].max()),
                        "residual": bool(out.uns["squint"]["impute"]["params"]["residual"]),
                        "median_s": float(np.median(times)), "times_s": [round(t, 4) for t in times],
                        "median_cpu_s": float(np.median(cpu)), "cpu_s": [round(t, 4) for t in cpu]}
    # the first polygon on a fresh Imputer also computes the residuals of the measured cells around it (then
    # cached for every later polygon): the defaults, cold
    cold = []
    for _ in range(args.repeats if args.model == "squint" else 0):
        fresh = Imputer(model, adata)
        t0 = time.perf_counter()
        fresh.impute(regions=[region])
        cold.append(time.perf_counter() - t0)
    if cold:
        record["context logmean first polygon"] = {"median_s": float(np.median(cold)),
                                                   "times_s": [round(t, 4) for t in cold]}
    print(json.dumps(record, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=1)
    return record


if __name__ == "__main__":
    main()
