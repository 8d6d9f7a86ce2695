"""H-CIFM experiment harness: train one Cifm per config on held-out patches, score oneshot and infill paths
with the benchmark's own scoring (benchmark_impute, variants={}), plus log-space diagnostics by ring.

python exp.py --data FILE [--section S --train-sections a,b,c] --seed 0 --tag NAME --opt k=v ...
"""
import argparse, json, sys, time, os
import numpy as np
import anndata as ad
import torch

from napari_squint.api.cifm import Cifm
from napari_squint.tasks.benchmark_impute import benchmark_impute
from napari_squint.data.imputation import hops_to_observed
from napari_squint.models.cifm_infer import infill_tiled

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True)
ap.add_argument("--section", default=None)
ap.add_argument("--train-sections", default=None)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--tag", required=True)
ap.add_argument("--opt", action="append", default=[])
ap.add_argument("--outdir", default="/tmp/hcifm/runs")
a = ap.parse_args()
torch.set_num_threads(1)
opts = {}
for kv in a.opt:
    k, v = kv.split("=", 1)
    try:
        v = int(v)
    except ValueError:
        try:
            v = float(v)
        except ValueError:
            pass
    opts[k] = v
opts.setdefault("num_threads", 1)
adata = ad.read_h5ad(a.data)
cache = {}
diag = {}


def train(adata_, held, test):
    key = (int(held.sum()), int(test[0]))
    if key in cache:
        return cache[key]
    t0 = time.perf_counter()
    model = Cifm(adata_, section_key="section", genes="all", holdout=held, seed=0, **opts)
    model.train()
    diag["train_s"] = time.perf_counter() - t0
    diag["loss_first_last"] = [model.history[0]["loss"], model.history[-1]["loss"]]
    diag["steps"] = None
    data = model.prepare(adata_)
    cache[key] = (model, data)
    # log-space diagnostics on the held-out cells
    graph = model.graph_of(data)
    truth = graph.x_in[test].toarray()
    mean = np.asarray(model.data.x_in.mean(0)).ravel()
    rings = hops_to_observed(np.flatnonzero(held), graph.adj, ~held)
    pos = {c: i for i, c in enumerate(np.flatnonzero(held))}
    rt = np.array([rings[pos[c]] for c in test])
    diag["rings"] = np.bincount(rt).tolist()
    for path in ("oneshot", "infill"):
        x_all, _ = infill_tiled(model.module, graph, held, model.config, model.device, path=path)
        pred = x_all[test].toarray()
        d = {"mse": float(((pred - truth) ** 2).mean()), "mse_mean": float(((mean - truth) ** 2).mean()),
             "pred_sd_over_cells": float(pred.std(0).mean()), "true_sd": float(truth.std(0).mean())}
        for r in (1, 2, 3):
            sel = rt == r if r < 3 else rt >= 3
            if sel.sum() > 5:
                pg = [np.corrcoef(pred[sel, j], truth[sel, j])[0, 1] for j in range(truth.shape[1])
                      if truth[sel, j].std() > 0 and pred[sel, j].std() > 0]
                d[f"pcg_log_ring{r}"] = float(np.mean(pg)) if pg else 0.0
                d[f"n_ring{r}"] = int(sel.sum())
        diag[path] = d
    return cache[key]


def make(path):
    def fn(adata_, held, test):
        model, data = train(adata_, held, test)
        model.config.impute_path = path
        res = model.impute_cells(data, held, cells=test)
        return res["imputed"], res["imputed_nbr"]
    return fn


t0 = time.perf_counter()
secs = a.train_sections.split(",") if a.train_sections else None
res = benchmark_impute(adata, section=a.section, sites="patches", seeds=[a.seed], sections=secs, variants={},
                       extra_methods={"CIFM oneshot": make("oneshot"), "CIFM infill": make("infill")},
                       section_key="section", options={"num_threads": 1})
out = {"tag": a.tag, "data": os.path.basename(a.data), "opts": opts, "seed": a.seed, "diag": diag,
       "seconds": time.perf_counter() - t0}
sc = res["runs"][0]["scores"] if "runs" in res else None
if sc is None:
    sc = res["summary"]
summ = {}
for tgt in ("X", "X_nbr"):
    for m, v in sc[tgt].items():
        summ[f"{tgt}|{m}"] = {k: (v[k]["mean"] if isinstance(v[k], dict) else v[k]) for k in ("pc_gene", "mmd", "energy")}
out["scores"] = summ
os.makedirs(a.outdir, exist_ok=True)
json.dump(out, open(f"{a.outdir}/{a.tag}.json", "w"), indent=1)
print(json.dumps(out["diag"], indent=1))
for k, v in summ.items():
    print(f"{k:50s} pc_gene {v['pc_gene']:.3f} mmd {v['mmd']:.4f}")
print("seconds", out["seconds"])
