"""CIFM on a dense panel (STARmap 3D), issue 16: log-space error of the one-shot reconstruction of held-out patches.

    python dense_loss.py [SPATIAL_KEY] [option=value ...]    e.g.  python dense_loss.py spatial_3d epochs=15 loss=mse

Trains CIFM on the block minus the seed-0 patches of the benchmark and prints the held-out cells' log-space MSE (log1p
of counts per 10^4) against the training mean's, and the mean prediction. Run on 2026-12-07 with epochs=15 and
loss=balanced_mse (before/after the empty-cell fix, f559e96) or loss=mse (docs/cifm.md, "Dense panels").
"""
import sys
import time

import anndata as ad
import numpy as np
import torch

from napari_squint.api.cifm import Cifm
from napari_squint.tasks.holdout import choose_patches

torch.set_num_threads(1)
key = sys.argv[1] if len(sys.argv) > 1 else "spatial_3d"
opts = {}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    try:
        opts[k] = float(v) if "." in v else int(v)
    except ValueError:
        opts[k] = v
a = ad.read_h5ad("../shared/data/starmap3d_visualcortex_wang2018.h5ad")
hold = choose_patches(a, section=None, section_key="section", spatial_key=key, seed=0) >= 0
model = Cifm(a, section_key="section", spatial_key=key, holdout=hold, seed=0, **{"epochs": 15, **opts})
x = a.X.toarray().astype(float)
logn = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)
print(f"held-out cells {hold.sum()}; training mean's MSE {((logn[hold] - logn[~hold].mean(0)) ** 2).mean():.3f}")
t0 = time.time()
for ev in model.iter_train():
    if ev.stage == "epoch":
        print(f"epoch {ev.epoch} loss {ev.metrics['loss']:.3f} ({time.time() - t0:.0f} s)", flush=True)
rec = model.reconstruct(model.prepare(a), hold)
print(f"CIFM one-shot MSE {((logn[hold] - rec) ** 2).mean():.3f}; mean prediction {rec.mean():.2f} "
      f"(measured {logn[hold].mean():.2f})")
