"""SQuINT on the wide low-depth synthetic slide: deviance explained, tokens, and a cell-type probe on the latents.

usage: train_wide.py N_CELLS EPOCHS [key=value ...]   (options of SquintConfig; genes=N picks N genes)
"""
import json, sys, time
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score as ari
from napari_squint.data.synthetic import make_tissue
from napari_squint.api.squint import Squint

n_cells, epochs = int(sys.argv[1]), int(sys.argv[2])
opts = {}
for kv in sys.argv[3:]:
    k, v = kv.split("=", 1)
    try:
        v = json.loads(v)
    except json.JSONDecodeError:
        pass
    opts[k] = v
genes = opts.pop("genes", "all")
lib = float(opts.pop("mean_library", 200.0))
n_genes = int(opts.pop("n_genes", 1000))
t0 = time.time()
a = make_tissue(n_cells=n_cells, n_genes=n_genes, n_sections=4, seed=0, mean_library=lib)
m = Squint(a, section_key="section", genes=genes, epochs=epochs, seed=0, num_threads=1, **opts)
hist = m.train()
rec = m.reconstruction_report()
enc = m.encode(m.data)
tok = enc["tokens"]
truth = a.obs["cell_type"].astype(str).to_numpy()
lat = enc["latent"]
perm = np.random.default_rng(0).permutation(len(truth)); half = len(truth) // 2
probe = LogisticRegression(max_iter=2000).fit(lat[perm[:half]], truth[perm[:half]])
out = {"n_cells": n_cells, "epochs": epochs, "genes": genes, "mean_library": lib, "opts": opts,
       "deviance_explained": rec["deviance_explained"], "nb_ratio": rec["ratio"],
       "tokens_used": int(np.unique(tok).size), "ari_tokens_vs_types": ari(truth, tok),
       "latent_probe_acc": float((probe.predict(lat[perm[half:]]) == truth[perm[half:]]).mean()),
       "latent_sd_between_cells": float(lat.std(0).mean()),
       "nb_loss_per_epoch": [round(h["nb_loss"], 4) for h in hist],
       "seconds": time.time() - t0}
print(json.dumps(out, indent=1, default=float))
