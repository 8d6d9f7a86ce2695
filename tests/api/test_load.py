"""``load_any``: one loader for SQuINT and CIFM model folders (CLI and plugin), and its errors."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import torch

from napari_squint import _constants as K
from napari_squint.api.cifm import Cifm
from napari_squint.api.load import NotAModelError, folder_kind, load_any
from napari_squint.api.squint import Squint
from napari_squint.data.synthetic import make_tissue

CIFM_SMALL = dict(hidden=16, latent=8, layers=1, batch_size=128, tile_cells=64, device="cpu", seed=0,
                  mask_ratio=0.2)


@pytest.fixture(scope="module")
def tissue():
    torch.set_num_threads(1)
    return make_tissue(n_cells=400, n_genes=20, n_sections=2, n_cell_types=4, seed=3)


@pytest.fixture(scope="module")
def folders(tissue, tmp_path_factory):
    """An untrained SQuINT and a 1-epoch CIFM model, saved (weights are what a round trip must keep)."""
    root = tmp_path_factory.mktemp("load_any")
    squint = Squint(tissue, epochs=1, codebook_size=4, heads=1, hidden=16, latent=8, device="cpu")
    cifm = Cifm(tissue, epochs=1, **CIFM_SMALL)
    cifm.train()
    return {"squint": (squint, squint.save(root / "sq")), "cifm": (cifm, cifm.save(root / "cifm")), "root": root}


def _same_weights(a, b) -> bool:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def test_load_any_squint_folder(folders):
    model, path = folders["squint"]
    assert folder_kind(path) == "squint"
    back = load_any(path, device="cpu")
    assert type(back) is Squint and back.has_tokens
    assert back.genes == model.genes and back.sections == model.sections
    assert _same_weights(model, back)


def test_load_any_cifm_folder_gives_the_same_embeddings(folders, tissue):
    model, path = folders["cifm"]
    assert folder_kind(path) == "cifm"
    back = load_any(str(path), device="cpu")
    assert type(back) is Cifm and not back.has_tokens
    assert back.genes == model.genes and back.history == model.history
    assert _same_weights(model, back)
    data = model.prepare(tissue)
    np.testing.assert_allclose(back.encode(back.prepare(tissue))["latent"], model.encode(data)["latent"],
                               rtol=1e-5, atol=1e-6)


def test_squint_folder_without_a_model_kind_is_squint(folders, tmp_path):
    """Folders saved before CIFM existed have no 'model' entry in meta.json."""
    import shutil

    _, path = folders["squint"]
    old = tmp_path / "old"
    shutil.copytree(path, old)
    meta = json.loads((old / K.CKPT_META).read_text())
    del meta["model"]
    (old / K.CKPT_META).write_text(json.dumps(meta))
    assert folder_kind(old) == "squint" and type(load_any(old)) is Squint


def test_cli_load_model_uses_load_any(folders):
    from napari_squint.cli.common import load_model

    assert type(load_model(folders["cifm"][1], device="cpu")) is Cifm
    assert type(load_model(folders["squint"][1], device="cpu")) is Squint


@pytest.mark.parametrize("case", ["empty", "missing", "file", "half"])
def test_a_folder_that_is_neither_kind_is_a_clear_error(tmp_path, folders, case):
    if case == "empty":
        path = tmp_path / "empty"
        path.mkdir()
        (path / "notes.txt").write_text("not a model")
    elif case == "missing":
        path = tmp_path / "nowhere"
    elif case == "file":
        path = tmp_path / "model.txt"
        path.write_text("x")
    else:  # a model folder without its weights
        import shutil

        path = tmp_path / "half"
        shutil.copytree(folders["cifm"][1], path)
        (path / K.CKPT_WEIGHTS).unlink()
    with pytest.raises(NotAModelError) as info:
        load_any(path)
    msg = str(info.value)
    assert str(path) in msg
    if case in ("empty", "half"):
        assert "neither a SQuINT nor a CIFM model" in msg
        assert K.CKPT_WEIGHTS in msg
    assert isinstance(info.value, FileNotFoundError)  # the CLI reports these as errors, exit code 2


def test_unknown_model_kind_names_the_metadata_file(folders, tmp_path):
    import shutil

    path = tmp_path / "other"
    shutil.copytree(folders["cifm"][1], path)
    meta = json.loads((path / K.CKPT_META).read_text())
    meta["model"] = "scvi"
    (path / K.CKPT_META).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"unknown model kind 'scvi'") as info:
        load_any(path)
    assert str(path / K.CKPT_META) in str(info.value)


def test_cli_impute_runs_on_a_cifm_folder(folders, tissue, tmp_path):
    """``squint impute MODEL_DIR`` loads a CIFM folder through load_any and in-paints with it."""
    from shapely.geometry import Point

    from napari_squint.cli.main import main
    from napari_squint.io.geojson import Region, write_polygons

    data = tmp_path / "slide.h5ad"
    tissue.write_h5ad(data)
    sel = (tissue.obs["section"] == "section_0").to_numpy()
    xy = np.asarray(tissue.obsm["spatial"], dtype=float)
    centre = np.median(xy[sel], axis=0)
    d = np.sort(np.linalg.norm(xy[sel] - centre, axis=1))
    poly = write_polygons([Region("section_0", Point(centre).buffer(float(d[15] + d[16]) / 2), "patch")],
                          tmp_path / "regions.geojson")
    out = tmp_path / "out.h5ad"
    rc = main(["impute", str(folders["cifm"][1]), str(data), "--polygons", str(poly), "--out", str(out),
               "--device", "cpu"])
    assert rc == 0
    res = ad.read_h5ad(out)
    assert res.n_obs == 16 and res.layers["imputed"].shape == (16, tissue.n_vars)
    imp = np.asarray(res.layers["imputed"])
    assert np.isfinite(imp).all() and (imp >= 0).all()
    assert (res.obs["squint_token"].astype(int) == -1).all()  # CIFM has no tokens
    assert res.uns["squint"]["impute"]["params"]["model_kind"] == "cifm"
    # the decoder's microenvironment head is SQuINT's only: a clear error, exit code 2
    rc = main(["impute", str(folders["cifm"][1]), str(data), "--polygons", str(poly), "--out",
               str(tmp_path / "bad.h5ad"), "--nbr", "decoder"])
    assert rc == 2 and not (tmp_path / "bad.h5ad").exists()


def test_cli_commands_that_need_tokens_refuse_a_cifm_folder_in_one_line(folders, tissue, tmp_path, capsys):
    from napari_squint.cli.main import main
    from napari_squint.io.write import write_h5ad

    data = write_h5ad(tissue, tmp_path / "slide.h5ad")
    rc = main(["tokens", str(folders["cifm"][1]), str(data), "--out", str(tmp_path / "t.h5ad")])
    err = capsys.readouterr().err
    assert rc == 2 and "squint tokens: error:" in err and "token" in err.lower()
    assert "Traceback" not in err and not (tmp_path / "t.h5ad").exists()
