import numpy as np
import pytest

from napari_squint.data.validate import SlideError
from napari_squint.io.outputs import MARKER, OutputError
from napari_squint.io.read import read_slide
from napari_squint.io.write import to_spatialdata, write_h5ad, write_spatialdata


def test_h5ad_roundtrip_atomic(tmp_path, tissue):
    p = write_h5ad(tissue, tmp_path / "slide.h5ad")
    a = read_slide(p, section_key="section")
    assert a.shape == tissue.shape
    np.testing.assert_allclose(a.obsm["spatial"], tissue.obsm["spatial"])
    assert a.uns["squint_source"]["format"] == "h5ad"
    # no temporary file left; the manifest records the file as the tool's own
    assert sorted(f.name for f in tmp_path.iterdir()) == [MARKER, "slide.h5ad"]
    with pytest.raises(OutputError, match="exists"):
        write_h5ad(tissue, p, overwrite=False)
    write_h5ad(tissue, p, overwrite=True)  # the tool's own file: replaced


def test_spatialdata_roundtrip_finds_table_keys(tmp_path, tissue):
    sdata = to_spatialdata(tissue, section_key="section")
    assert len(sdata.shapes) == tissue.obs["section"].nunique()
    p = write_spatialdata(sdata, tmp_path / "slide.zarr")
    a = read_slide(p, section_key="section")
    assert a.n_obs == tissue.n_obs
    assert a.uns["squint_source"]["region_key"] == "region"
    np.testing.assert_allclose(np.asarray(a.obsm["spatial"]), tissue.obsm["spatial"], atol=1e-4)


def test_spatialdata_coordinates_from_shapes_when_table_has_none(tmp_path, tissue):
    sdata = to_spatialdata(tissue, section_key="section")
    del sdata.tables["table"].obsm["spatial"]
    p = write_spatialdata(sdata, tmp_path / "s.zarr")
    a = read_slide(p)
    sec = a.obs["section"].astype(str).to_numpy()
    orig = tissue.obs["section"].astype(str).to_numpy()
    for s in np.unique(orig):
        np.testing.assert_allclose(np.sort(a.obsm["spatial"][sec == s, 0]), np.sort(tissue.obsm["spatial"][orig == s, 0]),
                                   atol=1e-4)


def test_read_errors_name_the_fault(tmp_path, tissue):
    with pytest.raises(FileNotFoundError, match="nope.h5ad"):
        read_slide(tmp_path / "nope.h5ad")
    p = write_h5ad(tissue, tmp_path / "s.h5ad")
    with pytest.raises(SlideError, match="'counts'"):
        read_slide(p, layer="counts")
    with pytest.raises(SlideError, match="'xy'"):
        read_slide(p, spatial_key="xy")
    bad = tmp_path / "x.csv"
    bad.write_text("a")
    with pytest.raises(SlideError, match="unsupported"):
        read_slide(bad)


def test_spatialdata_backed_reads_counts_lazily_and_prepares_the_same(tmp_path, tissue):
    import scipy.sparse as sp

    from napari_squint.data.prepare import GraphConfig, prepare_slide

    tissue = tissue.copy()
    tissue.layers["counts"] = tissue.X.copy()
    p = write_spatialdata(to_spatialdata(tissue, section_key="section"), tmp_path / "lazy.zarr")
    lazy = read_slide(p, section_key="section", backed=True)
    eager = read_slide(p, section_key="section")
    # the counts stay on disk: a lazy (dask) array, not a matrix in memory
    assert not isinstance(lazy.X, (np.ndarray, sp.spmatrix, sp.sparray)) and hasattr(lazy.X, "compute")
    assert lazy.shape == eager.shape and (lazy.obs_names == eager.obs_names).all()
    genes = tissue.var_names.tolist()[:25]
    kw = dict(section_key="section", spatial_key="spatial", graph=GraphConfig(k=6, max_degree=12))
    a, b = prepare_slide(lazy, genes, **kw), prepare_slide(eager, genes, **kw)
    assert (a.counts != b.counts).nnz == 0 and (a.x_nbr != b.x_nbr).nnz == 0
    np.testing.assert_array_equal(a.nbr, b.nbr)
    # a counts layer is read lazily too, and a missing one is named
    from_layer = read_slide(p, section_key="section", backed=True, layer="counts")
    assert (prepare_slide(from_layer, genes, **kw).counts != b.counts).nnz == 0
    with pytest.raises(SlideError, match="'raw'"):
        read_slide(p, section_key="section", backed=True, layer="raw")


def test_results_get_ordinary_file_permissions(tmp_path):
    """Atomic writes go through a private temporary file; the result must not stay owner-only."""
    import os
    import stat

    import anndata as ad
    import numpy as np

    from napari_squint.io.geojson import Region, write_polygons
    from napari_squint.io.write import write_h5ad

    old = os.umask(0o022)
    try:
        h5 = write_h5ad(ad.AnnData(np.ones((2, 2), dtype=np.float32)), tmp_path / "out.h5ad")
        from shapely.geometry import box

        gj = write_polygons([Region("s0", box(0, 0, 1, 1), "r")], tmp_path / "r.geojson")
    finally:
        os.umask(old)
    for path in (h5, gj):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path


def test_damaged_h5ad_named_before_scipy_sees_it(tmp_path, tissue):
    import h5py
    import scipy.sparse as sp

    a = tissue.copy()
    a.X = sp.csr_matrix(a.X)
    p = tmp_path / "bad.h5ad"
    a.write_h5ad(p)
    with h5py.File(p, "r+") as f:
        idx = f["X/indices"][:]
        idx[7] = a.n_vars + 3
        f["X/indices"][:] = idx
    before = p.read_bytes()
    for backed in (False, True):
        with pytest.raises(SlideError, match=rf"bad.h5ad: X is a damaged sparse matrix: column index {a.n_vars + 3}"):
            read_slide(p, backed=backed)
    assert p.read_bytes() == before


def test_truncated_or_foreign_h5ad_named(tmp_path, tissue):
    p = write_h5ad(tissue, tmp_path / "s.h5ad")
    cut = tmp_path / "cut.h5ad"
    cut.write_bytes(p.read_bytes()[:4000])
    with pytest.raises(SlideError, match="cut.h5ad cannot be read as an .h5ad file"):
        read_slide(cut)
    txt = tmp_path / "txt.h5ad"
    txt.write_text("hello")
    with pytest.raises(SlideError, match="txt.h5ad cannot be read"):
        read_slide(txt)


def test_damaged_zarr_named(tmp_path, tissue):
    p = tmp_path / "broken.zarr"
    p.mkdir()
    (p / "zarr.json").write_text("{not json")
    with pytest.raises(SlideError, match="broken.zarr cannot be read as a SpatialData .zarr store"):
        read_slide(p)
