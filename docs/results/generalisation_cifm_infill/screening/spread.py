"""CIFM: does matching the imputed cells' spread to the observed cells' help MMD without losing per-gene PC?

Run on 2026-12-08 (CIFM trained for the fixed 60 epochs, val_frac=0, as below), output in spread_a1_seed0.log:
.venv/bin/python docs/results/generalisation_cifm_infill/screening/spread.py \
    ../shared/data/merfish_hypothalamus_moffitt2018_9sections.h5ad 0 \
    Animal1_Bregma_-0.19,Animal1_Bregma_-0.14,Animal1_Bregma_-0.09 Animal1_Bregma_-0.14
"""
import sys, time, json
import numpy as np, anndata as ad, torch
from napari_squint import metrics as M
from napari_squint.api.cifm import Cifm
from napari_squint.data.prepare import prepare_slide
from napari_squint.data.genes import select_genes
from napari_squint.data.imputation import counts_from_log, masked_depth, microenv_members, microenv_sum
from napari_squint.models.cifm_infer import infill_tiled
from napari_squint.tasks.holdout import choose_sites
from napari_squint.config import SquintConfig
torch.set_num_threads(1)
path, seed = sys.argv[1], int(sys.argv[2])
secs = sys.argv[3].split(",") if len(sys.argv) > 3 and sys.argv[3] else None
section = sys.argv[4] if len(sys.argv) > 4 else None
a = ad.read_h5ad(path)
if secs:
    a = a[a.obs["section"].astype(str).isin(secs)].copy()
genes = select_genes(a, "all")
full = prepare_slide(a, genes, section_key="section" if "section" in a.obs else None, graph=SquintConfig().graph, spatial_key="spatial")
labels = choose_sites(a, sites="patches", section=section, n_patches=3, fraction=0.03, seed=seed,
                      section_key="section" if "section" in a.obs else None, spatial_key="spatial")
held = labels >= 0; test = np.flatnonzero(held)
nb = full.nbr
touches = ((nb >= 0) & held[np.maximum(nb, 0)]).any(1); clean = ~held & ~touches
counts = full.counts
pca_x = M.reference_pca(counts[~held], seed=seed); pca_n = M.reference_pca(full.x_nbr[clean], seed=seed)
truth = counts[test].toarray(); truth_n = full.x_nbr[test].toarray()
t0 = time.time()
model = Cifm(a, section_key="section" if "section" in a.obs else None, genes=genes, holdout=held, seed=seed, num_threads=1,
              val_frac=0.0)
model.train()
print("trained", round(time.time() - t0), flush=True)
data = model.prepare(a)
masked = held
est = masked_depth(data, masked, None)
graph = model.graph_of(data)
allm = np.flatnonzero(masked)
x_all, _ = infill_tiled(model.module, graph, masked, model.config, model.device, path="infill")
xl = x_all[allm].toarray()
obs = data.x_in[~masked].toarray()
sec = data.batch
def score(xlog):
    imp_all = counts_from_log(xlog, est[allm])
    pos = np.searchsorted(allm, test)
    a_meas, a_imp = microenv_members(test, data.nbr[test], allm, data.n_cells)
    nbr = microenv_sum(data.counts, a_meas, a_imp, imp_all)
    x = M.evaluate_imputation(truth, imp_all[pos], pca=pca_x, seed=seed, max_n=2000)
    n = M.evaluate_imputation(truth_n, nbr, pca=pca_n, seed=seed, max_n=2000)
    return {k: round(v, 4) for k, v in [("X pc", x["pc_gene"]), ("X mmd", x["mmd"]), ("N pc", n["pc_gene"]), ("N mmd", n["mmd"]), ("N E", n["energy"])]}
res = {"raw": score(xl)}
s_obs = obs.std(0); m_obs = obs.mean(0)
mu = xl.mean(0); s_t = xl.std(0)
for name, f in [("match sd", np.clip(s_obs / np.maximum(s_t, 1e-6), 1, 20)), ("half", np.clip(np.sqrt(s_obs / np.maximum(s_t, 1e-6)), 1, 20))]:
    res[name] = score(np.maximum(mu + (xl - mu) * f, 0))
print(json.dumps(res), flush=True)
nbl = M.neighbourhood_average(full.coords, counts, ~held, test, k=8, section=a.obs["section"].astype(str).to_numpy() if "section" in a.obs else None)
print("nbr avg", M.evaluate_imputation(truth_n, M.nbr_profile(counts, nbl, held, nb, test), pca=pca_n, seed=seed, max_n=2000))
