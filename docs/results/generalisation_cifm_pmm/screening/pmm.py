"""CIFM: predictive mean matching (api/cifm_pmm.py) on the benchmark's patches, one trained model, every variant.

Trains CIFM with its defaults (val_frac=0.1) on the training cells of one benchmark seed and scores, on the same
model and held-out cells with the benchmark's scoring, the decoded infill and the PMM variants below.
.venv/bin/python docs/results/generalisation_cifm_pmm/screening/pmm.py \
    ../shared/data/merfish_hypothalamus_moffitt2018_9sections.h5ad SEED \
    Animal1_Bregma_-0.19,Animal1_Bregma_-0.14,Animal1_Bregma_-0.09 Animal1_Bregma_-0.14
"""
import os, sys, time, json
import numpy as np, anndata as ad, torch
from napari_squint import metrics as M
from napari_squint.api.cifm import Cifm
from napari_squint.api.cifm_pmm import DonorMatcher, donor_cells
from napari_squint.api.cifm_residual import masked_residuals
from napari_squint.data.cifm_batch import replace_rows
from napari_squint.data.prepare import prepare_slide
from napari_squint.data.genes import select_genes
from napari_squint.data.imputation import (counts_from_log, hops_to_observed, log_normalise_rows, masked_depth,
                                           microenv_members, microenv_sum)
from napari_squint.models.cifm_infer import reconstruct_tiled
from napari_squint.tasks.holdout import choose_sites
from napari_squint.config import SquintConfig
torch.set_num_threads(1)
path, seed = sys.argv[1], int(sys.argv[2])
secs = sys.argv[3].split(",") if len(sys.argv) > 3 and sys.argv[3] else None
section = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
spatial = sys.argv[5] if len(sys.argv) > 5 else "spatial"
a = ad.read_h5ad(path)
skey = "section" if "section" in a.obs else None
if secs:
    a = a[a.obs["section"].astype(str).isin(secs)].copy()
genes = select_genes(a, "all")
full = prepare_slide(a, genes, section_key=skey, graph=SquintConfig().graph, spatial_key=spatial)
labels = choose_sites(a, sites="patches", section=section, n_patches=3, fraction=0.03, seed=seed,
                      section_key=skey, spatial_key=spatial)
held = labels >= 0; test = np.flatnonzero(held)
nb = full.nbr
touches = ((nb >= 0) & held[np.maximum(nb, 0)]).any(1); clean = ~held & ~touches
counts = full.counts
pca_x = M.reference_pca(counts[~held], seed=seed); pca_n = M.reference_pca(full.x_nbr[clean], seed=seed)
truth = counts[test].toarray(); truth_n = full.x_nbr[test].toarray()
t0 = time.time()
cache = os.environ.get("MODEL_DIR")
if cache and os.path.exists(cache):
    model = Cifm.load(cache)
else:
    model = Cifm(a, section_key=skey, spatial_key=spatial, genes=genes, holdout=held, seed=seed, num_threads=1,
                 **({"epochs": int(os.environ["EPOCHS"])} if "EPOCHS" in os.environ else {}))
    model.train()
    if cache:
        model.save(cache)
print("trained", round(time.time() - t0), flush=True)
data = model.prepare(a)
cfg = model.config
masked = held
est = masked_depth(data, masked, None)
graph = model.graph_of(data)
allm = np.flatnonzero(masked)
pos = np.searchsorted(allm, test)
rings = hops_to_observed(allm, graph.adj, ~masked)
order = [np.flatnonzero(rings == r) for r in np.unique(rings)]
rec = lambda m, rows, xo=None: reconstruct_tiled(model.module, graph, m, rows, cfg, model.device, x_override=xo)
# donors: measured cells of the targets' sections, reconstructed masked with the targets masked
t1 = time.time()
dcells = donor_cells(data.batch, ~masked, data.batch[allm], 20000, seed=seed)
meas = data.x_in[dcells].toarray()
resid = masked_residuals(rec, graph.x_in, masked, dcells, cfg.mask_ratio, seed=seed)
pred_d = meas - resid
matcher = DonorMatcher(pred_d, meas, groups=data.batch[dcells])
print("donors", dcells.size, round(time.time() - t1), "s", flush=True)
grp = data.batch[allm]


def infill(hook=None):
    m = masked.copy(); x_cur = graph.x_in; x_log = np.zeros((allm.size, data.n_genes))
    for sel in order:
        rows = allm[sel]
        p = rec(m, rows, x_cur)
        x_log[sel] = p if hook is None else hook(p, grp[sel])
        x_cur = replace_rows(x_cur, rows, log_normalise_rows(counts_from_log(x_log[sel], est[rows])))
        m[rows] = False
    return x_log


def score(xlog):
    imp_all = counts_from_log(np.maximum(xlog, 0), est[allm])
    a_meas, a_imp = microenv_members(test, data.nbr[test], allm, data.n_cells)
    nbr = microenv_sum(data.counts, a_meas, a_imp, imp_all)
    x = M.evaluate_imputation(truth, imp_all[pos], pca=pca_x, seed=seed, max_n=2000)
    n = M.evaluate_imputation(truth_n, nbr, pca=pca_n, seed=seed, max_n=2000)
    return {k: round(float(v), 4) for k, v in [("X pc", x["pc_gene"]), ("X mmd", x["mmd"]), ("N pc", n["pc_gene"]),
                                               ("N mmd", n["mmd"]), ("N E", n["energy"])]}


res = {}
raw = infill()
res["infill (default)"] = score(raw)
from napari_squint.api.cifm_residual import nearest_measured
proj = matcher.project
pd_proj = proj(pred_d)
lin = np.expm1(meas)


def local(p, K, m, g_sel=None, cells=allm):
    pool = nearest_measured(np.asarray(data.coords, dtype=np.float64), data.batch, ~masked, data.coords[cells],
                            data.batch[cells], K)
    prow = np.searchsorted(dcells, pool)
    dist = ((pd_proj[prow] - proj(p)[:, None, :]) ** 2).sum(-1)
    best = np.argsort(dist, axis=1)[:, :m]
    rows = np.take_along_axis(prow, best, 1)
    return np.log1p(lin[rows].mean(1))


for K, m in ([] if os.environ.get("NEAR_DONORS") else [(8, 8), (16, 8), (32, 8), (64, 8), (16, 4), (32, 4), (32, 1), (64, 1)]):
    res[f"local pool K={K}, mean of best m={m}"] = score(local(raw, K, m))
if os.environ.get("NEAR_DONORS"):  # donors: only the N measured cells nearest the targets (a pool that follows the polygon)
    from scipy.spatial import cKDTree as _T
    for N in [int(v) for v in os.environ["NEAR_DONORS"].split(",")]:
        pool = np.flatnonzero(~masked & np.isin(data.batch, np.unique(grp)))
        dist, _ = _T(np.asarray(data.coords, dtype=np.float64)[allm]).query(np.asarray(data.coords, dtype=np.float64)[pool])
        near_cells = np.sort(pool[np.argsort(dist)[:N]])
        r_near = masked_residuals(rec, graph.x_in, masked, near_cells, cfg.mask_ratio, seed=seed)
        m_near = data.x_in[near_cells].toarray()
        mt = DonorMatcher(m_near - r_near, m_near, groups=data.batch[near_cells])
        res[f"pmm after, d=5, {N} nearest donors"] = score(mt.draw(raw, 5, np.random.default_rng(seed), grp))
    res["pmm after, d=5 (section)"] = score(matcher.draw(raw, 5, np.random.default_rng(seed), grp))
if os.environ.get("ONLY_LOCAL") or os.environ.get("NEAR_DONORS"):
    for k, v in res.items():
        print(f"{k:42s} {v}", flush=True)
    sys.exit()
for d in (5, 20):
    res[f"pmm after, d={d}"] = score(matcher.draw(raw, d, np.random.default_rng(seed), grp))
    rng = np.random.default_rng(seed)
    res[f"pmm per ring, d={d}"] = score(infill(lambda p, g: matcher.draw(p, d, rng, g)))
for d in (8,):
    near = matcher.nearest(raw, d, grp)
    res[f"mean of {d} matched donors"] = score(matcher.measured[near].mean(1))
near = matcher.nearest(raw, 5, grp)
pick = near[np.arange(near.shape[0]), np.random.default_rng(seed).integers(0, 5, near.shape[0])]
res["prediction + drawn donor residual, d=5"] = score(raw + resid[pick])
nbl = M.neighbourhood_average(full.coords, counts, ~held, test, k=8,
                              section=a.obs["section"].astype(str).to_numpy() if skey else None)
e = M.evaluate_imputation(truth_n, M.nbr_profile(counts, nbl, held, nb, test), pca=pca_n, seed=seed, max_n=2000)
ex = M.evaluate_imputation(truth, nbl, pca=pca_x, seed=seed, max_n=2000)
res["nbr avg"] = {"X pc": round(float(ex["pc_gene"]), 4), "X mmd": round(float(ex["mmd"]), 4),
                  "N pc": round(float(e["pc_gene"]), 4), "N mmd": round(float(e["mmd"]), 4), "N E": round(float(e["energy"]), 4)}
for k, v in res.items():
    print(f"{k:42s} {v}", flush=True)
print(json.dumps({"seed": seed, "path": path, "train_s": round(time.time() - t0), "results": res}), flush=True)
