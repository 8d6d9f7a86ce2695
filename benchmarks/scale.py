#!/usr/bin/env python
"""How SQuINT scales with the number of cells on one machine.

Each case runs in its own subprocess (so peak RSS is per case):

* ``synthetic N``: ``make_tissue(n_cells=N, n_genes=500)`` for N in 50K, 200K, 1M;
* ``merfish1m``: the 9-section MERFISH file tiled to ~1M cells (``tile_sections``, 135 genes);
* ``ddp``: two gloo processes (torchrun) training one epoch on the 50K synthetic slide.

Per case: graph/covariate preparation, one training epoch (cells/s), whole-slide token assignment
and whole-slide decoding of imputed profiles (chunked, results discarded), wall time and peak RSS.
The slope of time and memory per cell is fitted over the synthetic cases.

Usage::

    .venv/bin/python benchmarks/scale.py --out .bench/scale.json [--sizes 50000 200000 1000000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MERFISH = REPO.parent / "shared" / "data" / "merfish_hypothalamus_moffitt2018_9sections.h5ad"


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def one_case(kind: str, n: int, epochs: int) -> dict:
    import anndata as ad

    from napari_squint.api.squint import Squint
    from napari_squint.data.synthetic import make_tissue, tile_sections

    t0 = time.perf_counter()
    if kind == "synthetic":
        adata = make_tissue(n_cells=n, n_genes=500, n_sections=max(2, n // 50_000), seed=0)
    else:
        base = ad.read_h5ad(MERFISH)
        adata = tile_sections(base, int(np.ceil(n / base.n_obs)))
    gen_s = time.perf_counter() - t0
    rss_data = rss_gb()
    t0 = time.perf_counter()
    model = Squint(adata, section_key="section", epochs=epochs, seed=0, device="cpu")
    prep_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.train()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = model.encode(model.data)
    tokens_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, model.data.n_cells, 100_000):
        cells = np.arange(start, min(model.data.n_cells, start + 100_000))
        model.encode(model.data, cells=cells, decode=True)
    decode_s = time.perf_counter() - t0
    # whole-slide imputation: every cell imputed from its measured neighbours, in 5 disjoint rounds of 20 %
    # (each round masks its cells with the learned token; chunked, with progress events)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    rounds = rng.integers(0, 5, size=model.data.n_cells)
    imputed_cells = 0
    for r in range(5):
        masked = rounds == r
        for start in range(0, int(masked.sum()), 100_000):
            cells = np.flatnonzero(masked)[start:start + 100_000]
            out = model.impute_cells(model.data, masked, cells=cells)
            imputed_cells += out["imputed"].shape[0]
    impute_s = time.perf_counter() - t0
    return {"case": f"{kind}", "n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars), "epochs": epochs,
            "generate_s": gen_s, "prepare_s": prep_s, "train_s": train_s,
            "train_cells_per_s": adata.n_obs * epochs / train_s, "tokens_s": tokens_s,
            "tokens_cells_per_s": adata.n_obs / tokens_s, "decode_s": decode_s,
            "impute_all_s": impute_s, "impute_cells_per_s": imputed_cells / impute_s, "rss_after_data_gb": rss_data,
            "peak_rss_gb": rss_gb(), "tokens_used": int(np.unique(res["tokens"]).size)}


DDP_WORKER = r'''
import json, sys, time, resource, torch
torch.set_num_threads(1)
from napari_squint.data.synthetic import make_tissue
from napari_squint.api.squint import Squint
from napari_squint.train import distributed as D
rank, world, device = D.init()
adata = make_tissue(n_cells=50_000, n_genes=500, n_sections=2, seed=0)
m = Squint(adata, epochs=1, seed=0, device="cpu")
t0 = time.perf_counter(); D.train_ddp(m); dt = time.perf_counter() - t0
if rank == 0:
    json.dump({"case": "ddp_gloo_2proc", "n_cells": adata.n_obs, "n_genes": adata.n_vars, "epochs": 1, "train_s": dt,
               "train_cells_per_s": adata.n_obs / dt,
               "peak_rss_gb_rank0": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}, open(sys.argv[1], "w"))
torch.distributed.destroy_process_group()
'''


def ddp_case() -> dict:
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "w.py"
        script.write_text(DDP_WORKER)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = Path(d) / "r.json"
        torchrun = Path(sys.executable).with_name("torchrun")
        subprocess.run([str(torchrun), "--nproc_per_node=2", f"--master_port={port}", str(script), str(out)],
                       check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--case", default=None)
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--no-merfish", action="store_true")
    p.add_argument("--no-ddp", action="store_true")
    p.add_argument("--out", default=str(REPO / ".bench" / "scale.json"))
    a = p.parse_args()
    if a.case:
        print(json.dumps(one_case(a.case, a.n, a.epochs)))
        return
    rows = []
    cases = [("synthetic", n) for n in a.sizes] + ([] if a.no_merfish else [("merfish", 1_000_000)])
    for kind, n in cases:
        r = subprocess.run([sys.executable, __file__, "--case", kind, "--n", str(n), "--epochs", str(a.epochs)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            rows.append({"case": kind, "n_cells": n, "error": r.stderr[-2000:]})
        else:
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    if not a.no_ddp:
        rows.append(ddp_case())
        print(json.dumps(rows[-1]), flush=True)
    syn = [r for r in rows if r.get("case") == "synthetic" and "error" not in r]
    slope = {}
    if len(syn) >= 2:
        n = np.array([r["n_cells"] for r in syn], float)
        for key in ("train_s", "prepare_s", "tokens_s", "impute_all_s", "peak_rss_gb"):
            y = np.array([r[key] for r in syn], float)
            b, c = np.polyfit(n, y, 1)
            slope[key] = {"per_million_cells": b * 1e6, "intercept": c,
                          "r2": float(1 - ((y - (b * n + c)) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12))}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "slope": slope, "cpus": os.cpu_count()}, indent=2))
    print(json.dumps(slope, indent=1))


if __name__ == "__main__":
    main()
