"""The real slide shipped inside the package for ``squint demo``."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from napari_squint.datasets import DEMO_FILE, demo_path, merfish_hypothalamus


def test_demo_slide_is_shipped_small_and_licensed():
    path = demo_path()
    assert path.name == DEMO_FILE
    assert path.stat().st_size < 5e6  # a few MB
    note = path.with_name("LICENSE_merfish_hypothalamus.md").read_text()
    assert "CC0" in note and "Moffitt" in note and "10.5061/dryad.8t8s248" in note


def test_demo_slide_content():
    a = merfish_hypothalamus()
    assert a.shape == (11346, 135)
    # raw integer counts, sparse
    assert sp.issparse(a.X) and a.X.format == "csr"
    assert np.issubdtype(a.X.dtype, np.integer)
    assert a.X.data.min() >= 0 and a.X.sum() > 0
    assert (np.asarray(a.X.sum(1)).ravel() > 0).all()
    # two sections, with their cell counts
    counts = a.obs["section"].astype(str).value_counts().to_dict()
    assert counts == {"Animal1_Bregma_-0.19": 5803, "Animal1_Bregma_-0.24": 5543}
    # coordinates: (n, 2) finite floats, each section centred, micrometre-scale extent (about 2 mm)
    xy = np.asarray(a.obsm["spatial"])
    assert xy.shape == (a.n_obs, 2) and np.isfinite(xy).all()
    for s in counts:
        sel = (a.obs["section"] == s).to_numpy()
        mid = (xy[sel].max(0) + xy[sel].min(0)) / 2
        assert np.abs(mid).max() < 20.0  # centred (the source centred the section before dropping cells)
        assert 1000 < np.ptp(xy[sel], axis=0).max() < 4000
    assert a.obs["cell_type"].nunique() == 9
    assert "Moffitt" in a.uns["source"]
    assert a.obs_names.is_unique


def test_each_load_is_a_fresh_copy():
    a = merfish_hypothalamus()
    a.X.data[:] = 0
    assert merfish_hypothalamus().X.sum() > 0
