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


# ----------------------------------------------------------------- issue 13: files checked before use
def _damaged(kind):
    a = _slide()
    X = a.X.copy()
    if kind == "index out of range":
        X.indices[3] = 99
    elif kind == "negative index":
        X.indices[3] = -1
    elif kind == "indptr decreasing":
        X.indptr[5] = X.indptr[7] + 1
    elif kind == "indptr length":
        X.indptr = X.indptr[:-1]
    elif kind == "nnz disagrees":
        X.data = X.data[:-1]
    a.X = X
    return a


@pytest.mark.parametrize("kind", ["index out of range", "negative index", "indptr decreasing", "indptr length",
                                  "nnz disagrees"])
def test_damaged_sparse_matrix_named_before_scipy(kind):
    from napari_squint.data.validate import check_sparse_structure

    a = _damaged(kind)
    with pytest.raises(SlideError, match="adata.X is a damaged sparse matrix"):
        check_sparse_structure(a.X, where="adata.X")
    with pytest.raises(SlideError, match="damaged sparse matrix"):
        check(a)


def test_all_zero_slide_refused():
    a = _slide()
    a.X = sp.csr_matrix(a.shape, dtype=np.float32)
    with pytest.raises(SlideError, match="every cell has zero counts"):
        check(a)
    a.X = np.zeros(a.shape, dtype=np.float32)
    with pytest.raises(SlideError, match="every cell has zero counts"):
        check(a)


def test_third_coordinate_column_is_used_as_z():
    import warnings

    a = _slide()
    z = np.arange(a.n_obs, dtype=float)
    a.obsm["spatial"] = np.column_stack([a.obsm["spatial"], z])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # x, y, z is a volume: nothing to warn about
        _, coords, _ = check(a)
    assert coords.shape == (a.n_obs, 3)
    np.testing.assert_array_equal(coords[:, 2], z)


def test_fourth_coordinate_column_warned_not_silently_dropped():
    a = _slide()
    a.obsm["spatial"] = np.column_stack([a.obsm["spatial"], np.ones(a.n_obs), np.zeros(a.n_obs)])
    with pytest.warns(UserWarning, match="4 columns.*first three.*ignored"):
        _, coords, _ = check(a)
    assert coords.shape == (a.n_obs, 3)


def test_text_coordinates_named():
    a = _slide()
    a.obsm["spatial"] = np.full((a.n_obs, 2), "x", dtype=object)
    with pytest.raises(SlideError, match="'spatial'.*not numbers"):
        check(a)


def test_zero_read_depth_section_names_section_and_cells():
    from napari_squint.data.validate import section_depth

    lib = np.array([0.0, 0.0, 0.0, 5.0, 9.0])
    names = [f"cell{i}" for i in range(5)]
    with pytest.raises(SlideError, match=r"section 's1'.*3 have zero counts.*cell0"):
        section_depth(lib, np.ones(5, dtype=bool), names, "s1")
    assert section_depth(lib, np.array([False, False, False, True, True]), names, "s1") == 7.0


def test_more_genes_than_the_slide_refused():
    from napari_squint.data.genes import select_genes

    a = _slide()
    with pytest.raises(SlideError, match="genes=100000.*only 5 genes"):
        select_genes(a, 100000)
    assert select_genes(a, 5) == a.var_names.tolist()
