"""CIFM in-painting time on a real slide: one 500-cell disc of MERFISH Animal1_Bregma_-0.14, decoded mean vs donor draw.

Needs a CIFM trained on the three Animal 1 sections (e.g. MODEL_DIR written by pmm.py); one torch thread:
.venv/bin/python docs/results/generalisation_cifm_pmm/screening/speed_merfish.py MODEL_DIR
"""
import sys, time, numpy as np, torch, anndata as ad
torch.set_num_threads(1)
from napari_squint.api.cifm import Cifm
from napari_squint.tasks.impute import Imputer
from scipy.spatial import cKDTree
a = ad.read_h5ad("../shared/data/merfish_hypothalamus_moffitt2018_9sections.h5ad")
a = a[a.obs["section"].astype(str).isin(["Animal1_Bregma_-0.19", "Animal1_Bregma_-0.14", "Animal1_Bregma_-0.09"])].copy()
model = Cifm.load(sys.argv[1])
sec = np.flatnonzero((a.obs["section"].astype(str) == "Animal1_Bregma_-0.14").to_numpy())
xy = np.asarray(a.obsm["spatial"], float)[sec]; c = np.median(xy, 0)
_, idx = cKDTree(xy).query(c, k=500); mask = np.zeros(a.n_obs, bool); mask[sec[idx]] = True
imp = Imputer(model, a)
for draw in ("mean", "sample", "mean", "sample"):
    t0 = time.perf_counter(); imp.impute(mask=mask, draw=draw, seed=0); print(draw, round(time.perf_counter() - t0, 2), flush=True)
print(a.n_obs, sec.size)
