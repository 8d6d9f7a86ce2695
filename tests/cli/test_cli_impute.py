"""``squint impute`` and ``squint benchmark impute`` end to end."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest

from napari_squint.cli.main import main

TINY = dict(epochs=1, batch_size=256, codebook_size=8, heads=2, latent=16, hidden=32, seed=0, kmeans_cells=2000)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A slide on disk, a model trained on it, and polygons: one populated, one in a cut-out tear."""
    import shapely
    from scipy.spatial import cKDTree
    from shapely.geometry import Point

    from napari_squint.api.squint import Squint
    from napari_squint.data.synthetic import make_tissue
    from napari_squint.io.geojson import Region, write_polygons

    root = tmp_path_factory.mktemp("cli_impute")
    adata = make_tissue(n_cells=1200, n_genes=30, n_sections=2, seed=4)
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    regions = []
    for sec, n, name in (("section_0", 40, "patch"), ("section_1", 50, "tear")):
        sel = np.flatnonzero((adata.obs["section"] == sec).to_numpy())
        c = np.median(xy[sel], axis=0)
        d, _ = cKDTree(xy[sel]).query(c, k=n + 1)
        regions.append(Region(sec, Point(c).buffer(float(d[-2] + d[-1]) / 2), name))
    in_sec1 = (adata.obs["section"] == "section_1").to_numpy()
    tear = in_sec1 & shapely.contains_xy(regions[1].polygon, xy[:, 0], xy[:, 1])
    adata = adata[~tear].copy()
    data = root / "slide.h5ad"
    adata.write_h5ad(data)
    model = Squint(adata, **TINY)
    model.train()
    model.save(root / "model")
    poly = write_polygons(regions, root / "regions.geojson")
    return {"root": root, "data": data, "model": root / "model", "polygons": poly, "adata": adata}


def test_impute_cli_writes_the_documented_layout(files):
    out = files["root"] / "out.h5ad"
    before = files["data"].read_bytes()
    rc = main(["impute", str(files["model"]), str(files["data"]), "--polygons", str(files["polygons"]),
               "--out", str(out)])
    assert rc == 0
    assert files["data"].read_bytes() == before  # the input is never modified
    res = ad.read_h5ad(out)
    created = res.obs["squint_created"].to_numpy()
    assert (~created).sum() == 40 and created.sum() > 0
    measured = res.obs_names[~created]
    assert set(measured) <= set(files["adata"].obs_names)
    assert set(res.layers) == {"imputed", "imputed_nbr"}
    assert res.layers["imputed"].shape == (res.n_obs, 30)
    assert list(res.var_names) == list(files["adata"].var_names)
    assert {"section", "squint_token", "squint_created", "squint_region", "squint_ring"} <= set(res.obs)
    assert res.obsm["spatial"].shape == (res.n_obs, 2)
    params = res.uns["squint"]["impute"]["params"]
    assert params["method"] == "context" and params["polygons"].endswith("regions.geojson")
    assert params["draw"] == "logmean" and params["residual"] is True
    # --no-residual: the model's own prediction, a different profile
    plain = files["root"] / "plain.h5ad"
    assert main(["impute", str(files["model"]), str(files["data"]), "--polygons", str(files["polygons"]),
                 "--out", str(plain), "--no-residual"]) == 0
    alone = ad.read_h5ad(plain)
    assert alone.uns["squint"]["impute"]["params"]["residual"] is False
    assert not np.allclose(alone.layers["imputed"], res.layers["imputed"])


def test_impute_cli_oneshot_and_errors(files, capsys):
    out = files["root"] / "one.h5ad"
    assert main(["impute", str(files["model"]), str(files["data"]), "--polygons", str(files["polygons"]),
                 "--out", str(out), "--method", "oneshot"]) == 0
    assert (ad.read_h5ad(out).obs["squint_ring"] == 0).all()
    # an empty polygon with --no-fill
    rc = main(["impute", str(files["model"]), str(files["data"]), "--polygons", str(files["polygons"]),
               "--out", str(files["root"] / "x.h5ad"), "--no-fill"])
    assert rc == 2 and "hold no cell" in capsys.readouterr().err
    # a polygon naming an unknown section
    bad = files["root"] / "bad.geojson"
    doc = json.loads(files["polygons"].read_text())
    doc["features"][0]["properties"]["section"] = "section_9"
    bad.write_text(json.dumps(doc))
    rc = main(["impute", str(files["model"]), str(files["data"]), "--polygons", str(bad),
               "--out", str(files["root"] / "y.h5ad")])
    assert rc == 2 and "section_9" in capsys.readouterr().err
    # a self-intersecting polygon
    doc["features"][0]["properties"]["section"] = "section_0"
    doc["features"][0]["geometry"] = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    bad.write_text(json.dumps(doc))
    rc = main(["impute", str(files["model"]), str(files["data"]), "--polygons", str(bad),
               "--out", str(files["root"] / "z.h5ad")])
    assert rc == 2 and "self-intersecting" in capsys.readouterr().err


def test_impute_cli_rejects_a_model_trained_on_other_genes(files, capsys):
    other = files["adata"].copy()
    other.var_names = [f"x{i}" for i in range(other.n_vars)]
    path = files["root"] / "other.h5ad"
    other.write_h5ad(path)
    rc = main(["impute", str(files["model"]), str(path), "--polygons", str(files["polygons"]),
               "--out", str(files["root"] / "w.h5ad")])
    assert rc == 2 and "trained on other genes" in capsys.readouterr().err


def test_benchmark_cli_tiny(files):
    out = files["root"] / "bench"
    rc = main(["benchmark", "impute", str(files["data"]), "--section", "section_0", "--seeds", "1", "--epochs", "1",
               "--first-seed", "4", "--variants", "squint", "--methods", "infill", "--no-sample", "--no-cifm",
               "--out", str(out),
               "--option", "hidden=16", "--option", "latent=8", "--option", "codebook_size=4",
               "--option", "batch_size=256", "--option", "kmeans_cells=1000"])
    assert rc == 0
    res = json.loads((out / "impute_patches.json").read_text())
    assert "SQuINT (infill)" in res["summary"]["X"]
    assert "SQuINT (infill) logmean w/o residual" in res["summary"]["X_nbr"]
    assert res["config"]["seeds"] == [4]
    assert res["config"]["options"]["hidden"] == 16
    assert (out / "impute_patches.md").read_text().count("| neighbourhood average |") == 2


def test_benchmark_cli_adds_a_cifm_row_in_the_same_run(files):
    out = files["root"] / "bench_cifm"
    rc = main(["benchmark", "impute", str(files["data"]), "--section", "section_0", "--seeds", "1", "--epochs", "1",
               "--variants", "squint", "--methods", "oneshot", "--no-sample", "--out", str(out),
               "--option", "hidden=16", "--option", "latent=8", "--option", "codebook_size=4",
               "--option", "batch_size=256", "--option", "kmeans_cells=1000",
               "--cifm", "--cifm-option", "epochs=1", "--cifm-option", "hidden=8", "--cifm-option", "latent=4"])
    assert rc == 0
    res = json.loads((out / "impute_patches.json").read_text())
    for target in ("X", "X_nbr"):
        assert {"CIFM", "SQuINT (oneshot)", "neighbourhood average"} <= set(res["summary"][target])
        assert np.isfinite(res["summary"][target]["CIFM"]["pc_cell"]["mean"])
    assert res["config"]["extra_methods"] == ["CIFM"]
    # --no-sample leaves out every drawn row, CIFM's donor draw too
    assert "CIFM sample" not in res["summary"]["X_nbr"] and res["config"]["extra_settings"]["CIFM"]["draws"] == ["mean"]
    # how long CIFM trained in the run: one epoch (the cap), its validation tiles, its seconds
    tr = res["runs"][0]["training"]["CIFM"]
    assert tr["epochs"] == 1 and tr["best_epoch"] == 1 and tr["validation_cells"] > 0 and tr["train_seconds"] > 0


def test_benchmark_cli_cifm_option_needs_cifm(files, capsys):
    rc = main(["benchmark", "impute", str(files["data"]), "--no-cifm", "--cifm-option", "epochs=1"])
    assert rc == 2 and "--cifm-option needs CIFM" in capsys.readouterr().err


def test_impute_cli_draws_measured_cells_with_a_cifm_model(files):
    """``--draw sample`` with a CIFM model: every imputed cell of the populated polygon is a measured cell."""
    import anndata as ad

    from napari_squint.api.cifm import Cifm
    from napari_squint.data.imputation import log_normalise_rows

    root = files["root"]
    model = Cifm(files["adata"], epochs=1, hidden=8, latent=4, layers=1, batch_size=256, tile_cells=64, device="cpu")
    model.train()
    model.save(root / "cifm")
    out = root / "cifm_drawn.h5ad"
    rc = main(["impute", str(root / "cifm"), str(files["data"]), "--polygons", str(files["polygons"]),
               "--draw", "sample", "--seed", "2", "--out", str(out)])
    assert rc == 0
    got = ad.read_h5ad(out)
    imputed = np.asarray(got.layers["imputed"], dtype=np.float64)
    measured = files["adata"].X.toarray() if hasattr(files["adata"].X, "toarray") else np.asarray(files["adata"].X)
    ref = log_normalise_rows(measured)
    drawn = log_normalise_rows(imputed)
    assert got.n_obs > 0 and got.obs["squint_created"].any()  # the patch's cells and the tear's new cells
    index = {name: i for i, name in enumerate(files["adata"].obs_names)}
    for name, row, new in zip(got.obs_names, drawn, got.obs["squint_created"].to_numpy()):
        match = set(np.flatnonzero(np.abs(ref - row).max(1) < 1e-3).tolist())
        if not new:
            match.discard(index[name])  # another cell's profile, never the target's own (it is masked)
        assert match, f"{name} is no measured donor's profile"  # new cells are drawn from the measured too
