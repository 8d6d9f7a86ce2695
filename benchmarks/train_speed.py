#!/usr/bin/env python
"""Training speed, memory and quality of SQuINT, with the Novae peer in the same run.

Cases (each in its own subprocess, so peak RSS is per case):

* ``merfish``: the 9-section MERFISH mouse hypothalamus (49,468 cells x 135 genes) from ../shared/data.
* ``synthetic``: ``make_tissue(n_cells=50_000, n_genes=1000)``.
* ``novae``: Novae trained from scratch for one epoch on the MERFISH file, in its own venv
  (``bash benchmarks/novae_setup.sh`` makes it), via ``benchmarks/novae_peer.py``.

Usage::

    .venv/bin/python benchmarks/train_speed.py --all --out .bench/train_speed.json [--no-novae]
    .venv/bin/python benchmarks/train_speed.py --case merfish --epochs 30

Reported per case: wall time of preparation (graphs, covariates) and training, peak RSS, cells per second
(cells x epochs / training seconds), final losses, codebook utilisation/perplexity over the whole slide and the
NB reconstruction loss of X_nbr against the mean-profile baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MERFISH = REPO.parent / "shared" / "data" / "merfish_hypothalamus_moffitt2018_9sections.h5ad"


def run_case(case: str, epochs: int, threads: int | None) -> dict:
    import anndata as ad
    import torch

    if threads:
        torch.set_num_threads(threads)
    from napari_squint.api.squint import Squint

    t0 = time.perf_counter()
    if case == "merfish":
        adata = ad.read_h5ad(MERFISH)
    elif case == "synthetic":
        from napari_squint.data.synthetic import make_tissue

        adata = make_tissue(n_cells=50_000, n_genes=1000, n_sections=4, seed=0)
    else:
        raise SystemExit(f"unknown case {case!r}")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = Squint(adata, section_key="section", epochs=epochs, seed=0, device="cpu")
    prep_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hist = model.train()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.tokens(adata)
    tokens_s = time.perf_counter() - t0
    stats = model.codebook_stats(adata.obs["squint_token"].to_numpy().astype(int))
    rec = model.reconstruction_report()
    last = hist[-1]
    return {
        "case": case, "n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars), "epochs": epochs,
        "load_s": load_s, "prepare_s": prep_s, "train_s": train_s, "tokens_s": tokens_s,
        "total_s": load_s + prep_s + train_s + tokens_s,
        "cells_per_s": adata.n_obs * epochs / train_s,
        "epoch_s": train_s / epochs,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "final_nb_loss": last["nb_loss"], "final_nb_cell_loss": last.get("nb_cell_loss"),
        "final_adj_loss": last.get("adj_loss"), "final_commit_loss": last["commit_loss"],
        "utilisation": stats["utilisation"], "perplexity": stats["perplexity"], "tokens_used": stats["tokens_used"],
        "recon": rec, "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--case", choices=["merfish", "synthetic"])
    p.add_argument("--all", action="store_true")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-novae", action="store_true")
    p.add_argument("--out", default=str(REPO / ".bench" / "train_speed.json"))
    a = p.parse_args()
    if a.case:
        print(json.dumps(run_case(a.case, a.epochs, a.threads), default=float))
        return
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
               "cases": {}}
    for case in ("merfish", "synthetic"):
        cmd = [sys.executable, __file__, "--case", case, "--epochs", str(a.epochs)]
        if a.threads:
            cmd += ["--threads", str(a.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results["cases"][case] = json.loads(out.stdout.strip().splitlines()[-1])
        print(case, json.dumps(results["cases"][case], default=float), flush=True)
    novae_py = REPO / ".bench" / "novae-venv" / "bin" / "python"
    if not a.no_novae and novae_py.exists():
        res = REPO / ".bench" / "novae_in_run.json"
        subprocess.run([str(novae_py), str(REPO / "benchmarks" / "novae_peer.py"), str(MERFISH), "--out", str(res),
                        "--epochs", "1"], check=True, capture_output=True, text=True)
        nov = json.loads(res.read_text())
        results["cases"]["novae"] = nov
        ours = results["cases"]["merfish"]["cells_per_s"]
        results["ratio_squint_over_novae_cells_per_s"] = ours / nov["cells_per_s"]
        print("novae", nov.get("cells_per_s"), "ratio", results["ratio_squint_over_novae_cells_per_s"], flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
