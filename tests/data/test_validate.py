import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData

from napari_squint.data.validate import SlideError, validate_slide


def _slide(n=40, g=5, seed=0):
    rng = np.random.default_rng(seed)
    a = AnnData(X=sp.csr_matrix(rng.poisson(2, size=(n, g)).astype(np.float32)))
    a.obs_names = [f"c{i}" for i in range(n)]
    a.obs["section"] = ["s0"] * (n // 2) + ["s1"] * (n - n // 2)
    a.obsm["spatial"] = rng.random((n, 2)) * 100
    return a


def check(a, **kw):
    opts = dict(section_key="section", spatial_key="spatial", layer=None, k=8)
    opts.update(kw)
    return validate_slide(a, **opts)


def test_valid_slide_passes():
    counts, coords, sec = check(_slide())
    assert coords.shape == (40, 2) and list(sec.cat.categories) == ["s0", "s1"]


def test_normalised_data_rejected_unless_allowed():
    a = _slide()
    a.X = a.X * 0.37
    with pytest.raises(SlideError, match="non-integer"):
        check(a)
    check(a, allow_non_counts=True)


def test_negative_counts_rejected():
    a = _slide()
    a.X = sp.csr_matrix(-np.ones((40, 5), dtype=np.float32))
    with pytest.raises(SlideError, match="negative"):
        check(a)


def test_nan_coordinates_named():
    a = _slide()
    a.obsm["spatial"][3] = np.nan
    with pytest.raises(SlideError, match="'spatial'.*NaN"):
        check(a)


def test_missing_keys_named():
    a = _slide()
    with pytest.raises(SlideError, match="'xy'"):
        check(a, spatial_key="xy")
    with pytest.raises(SlideError, match="'slice'"):
        check(a, section_key="slice")
    with pytest.raises(SlideError, match="'counts'"):
        check(a, layer="counts")


def test_duplicate_ids_and_small_sections():
    a = _slide()
    a.obs_names = ["c0"] * 40
    with pytest.raises(SlideError, match="duplicate cell ids"):
        check(a)
    a = _slide()
    a.obs["section"] = ["s0"] * 35 + ["tiny"] * 5
    with pytest.raises(SlideError, match="tiny"):
        check(a)


def test_mismatched_coordinates_named():
    a = _slide()
    a.obsm["spatial"] = a.obsm["spatial"][:, :1]
    with pytest.raises(SlideError, match="shape"):
        check(a)
