"""Shared fixtures: a small synthetic tissue and the real MERFISH file (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MERFISH = SHARED_DATA / "merfish_hypothalamus_moffitt2018_9sections.h5ad"

torch.set_num_threads(1)
# one training thread: the automatic thread policy follows the machine's load, and another thread count rounds
# sums differently, so two trainings with one seed would differ bit-wise (tests of the policy unset this)
os.environ.setdefault("NAPARI_SQUINT_THREADS", "1")


@pytest.fixture(scope="session")
def tissue():
    """3 sections x ~1000 cells x 60 genes, seeded (read-only: copy before writing)."""
    from napari_squint.data.synthetic import make_tissue

    return make_tissue(n_cells=3000, n_genes=60, n_sections=3, seed=3)


@pytest.fixture(scope="session")
def merfish_path():
    if not MERFISH.exists():
        pytest.skip(f"needs the real MERFISH file at {MERFISH} (../shared/data is absent)")
    return MERFISH


@pytest.fixture(scope="session")
def trained_tiny(tissue):
    """A SQuINT model trained briefly on the tiny tissue."""
    from napari_squint.api.squint import Squint

    model = Squint(tissue, epochs=3, batch_size=256, codebook_size=8, heads=2, latent=16, hidden=32, seed=0)
    model.train()
    return model


@pytest.fixture(scope="session")
def make_cifm_graph():
    """Factory of small two-section CIFM graphs with 7 genes: ``make(n=300, seed=0, cfg=None)`` gives
    ``(graph, cfg, coords, section)`` (tests of data/cifm_graph.py and models/cifm_infer.py)."""
    import numpy as np

    from napari_squint.config import CifmConfig
    from napari_squint.data.cifm_graph import build_graph

    def make(n=300, seed=0, cfg=None):
        rng = np.random.default_rng(seed)
        coords = rng.uniform(0, 100, size=(n, 2))
        section = (coords[:, 0] > 50).astype(np.int64)  # two sections
        x = rng.gamma(1.0, 1.0, size=(n, 7)) * (rng.random((n, 7)) < 0.6)
        cfg = cfg or CifmConfig(hidden=8, latent=4, layers=1, tile_cells=40, batch_size=60, infer_cells=50)
        return build_graph(x, coords, section, cfg), cfg, coords, section

    return make


def layered_volume(n: int = 1500, n_genes: int = 30, seed: int = 0):
    """A tiny 3D tissue: cells in a 30 x 30 x 15 block whose type follows the depth (three layers along z, each
    split in two along x), Poisson counts of ~200 per cell. Its (x, y) projection stacks the layers on each other,
    so a plane's neighbours mix types that 3D neighbours keep apart. ``obsm['spatial']`` is (n, 3);
    ``obsm['spatial_xy']`` the first two columns."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    xyz = rng.uniform(0.0, 1.0, size=(n, 3)) * np.array([30.0, 30.0, 15.0])
    cell_type = np.minimum((xyz[:, 2] // 5).astype(int), 2) * 2 + (xyz[:, 0] > 15)
    profile = rng.gamma(0.5, 1.0, size=(6, n_genes))
    profile /= profile.sum(1, keepdims=True)
    library = rng.lognormal(np.log(200.0), 0.3, size=n)
    counts = rng.poisson(profile[cell_type] * library[:, None]).astype(np.float32)
    a = ad.AnnData(X=sp.csr_matrix(counts), obs=pd.DataFrame(
        {"section": pd.Categorical(["block"] * n), "cell_type": pd.Categorical(cell_type.astype(str))},
        index=[f"c{i}" for i in range(n)]))
    a.var_names = [f"g{j}" for j in range(n_genes)]
    a.obsm["spatial"] = xyz
    a.obsm["spatial_xy"] = xyz[:, :2].copy()
    return a


@pytest.fixture(scope="session")
def small_volume():
    """:func:`layered_volume` (read-only: copy before writing)."""
    return layered_volume()
