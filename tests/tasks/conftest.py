"""Fixtures of the task tests: a small tissue, a disc region on it, and a tiny trained model."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def small_tissue():
    """2 sections x ~700 cells x 40 genes (read-only: copy before writing)."""
    from napari_squint.data.synthetic import make_tissue

    return make_tissue(n_cells=1400, n_genes=40, n_sections=2, seed=11)


TINY = dict(epochs=2, batch_size=256, codebook_size=8, heads=2, latent=16, hidden=32, seed=0, kmeans_cells=2000)


@pytest.fixture(scope="session")
def tiny_model(small_tissue):
    from napari_squint.api.squint import Squint

    model = Squint(small_tissue, **TINY)
    model.train()
    return model


def disc_region(adata, section, n_inside, name="disc"):
    """A circular Region around the median cell of ``section`` holding about ``n_inside`` cells."""
    from scipy.spatial import cKDTree
    from shapely.geometry import Point

    from napari_squint.io.geojson import Region

    sel = adata.obs["section"].astype(str).to_numpy() == section
    xy = np.asarray(adata.obsm["spatial"], dtype=float)[sel]
    centre = np.median(xy, axis=0)
    d, _ = cKDTree(xy).query(centre, k=n_inside + 1)
    return Region(section, Point(centre).buffer(float(d[-2] + d[-1]) / 2, quad_segs=32), name)


@pytest.fixture(scope="session")
def make_disc():
    """``make_disc(adata, section, n_inside, name=...)`` -> a circular Region (see :func:`disc_region`)."""
    return disc_region
