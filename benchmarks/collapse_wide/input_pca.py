"""Diagnosis (2026-12-07, not a model option): the encoder reads its input projected onto the top-N principal components of the training cells'
log-normalised profiles (x -> mean + (x - mean) P P^T, a rank-N denoising); the likelihood keeps all genes."""
import json, sys, time
import numpy as np, torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score as ari
from napari_squint.data.synthetic import make_tissue
from napari_squint.api.squint import Squint

n_cells, epochs, n_pc = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
a = make_tissue(n_cells=n_cells, n_genes=1000, n_sections=4, seed=0, mean_library=200.0)
t0 = time.time()
m = Squint(a, section_key="section", genes="all", epochs=epochs, seed=0, num_threads=1)
x = m.data.x_in.toarray()
pca = PCA(n_pc, random_state=0).fit(x)
mu = torch.tensor(pca.mean_, dtype=torch.float32); P = torch.tensor(pca.components_.T, dtype=torch.float32)
first = m.module.enc_mlp[0]
first.register_forward_pre_hook(lambda mod, inp: (mu.to(inp[0]) + (inp[0] - mu.to(inp[0])) @ P.to(inp[0]) @ P.T.to(inp[0]),))
hist = m.train()
rec = m.reconstruction_report()
enc = m.encode(m.data)
tok = enc["tokens"]; truth = a.obs["cell_type"].astype(str).to_numpy(); lat = enc["latent"]
perm = np.random.default_rng(0).permutation(len(truth)); half = len(truth) // 2
probe = LogisticRegression(max_iter=2000).fit(lat[perm[:half]], truth[perm[:half]])
print(json.dumps({"n_pc": n_pc, "deviance_explained": rec["deviance_explained"], "tokens": int(np.unique(tok).size),
    "ari": ari(truth, tok), "probe": float((probe.predict(lat[perm[half:]]) == truth[perm[half:]]).mean()),
    "s": time.time() - t0}))
