import json

import anndata as ad
import pytest

from napari_squint.cli.main import main
from napari_squint.io.write import write_h5ad


@pytest.fixture(scope="module")
def slide(tmp_path_factory, tissue):
    return write_h5ad(tissue, tmp_path_factory.mktemp("d") / "slide.h5ad")


def test_train_then_tokens(tmp_path, slide, capsys):
    rc = main(["train", str(slide), "--out", str(tmp_path / "m"), "--epochs", "1", "--codebook-size", "8",
               "--batch-size", "256"])
    assert rc == 0
    assert (tmp_path / "m" / "model.safetensors").exists()
    rc = main(["tokens", str(tmp_path / "m"), str(slide), "--out", str(tmp_path / "t.h5ad")])
    assert rc == 0
    out = ad.read_h5ad(tmp_path / "t.h5ad")
    assert "squint_token" in out.obs and "squint_latent" in out.obsm
    src = ad.read_h5ad(slide)
    assert "squint_token" not in src.obs  # the input file is untouched


def test_train_input_genes_narrows_the_encoder_only(tmp_path, slide):
    from napari_squint.api.squint import Squint

    rc = main(["train", str(slide), "--out", str(tmp_path / "m"), "--epochs", "1", "--codebook-size", "8",
               "--batch-size", "256", "--input-genes", "5"])
    assert rc == 0
    m = Squint.load(tmp_path / "m")
    assert m.config.model.input_genes == 5 and m.module.enc_mlp[0].in_features == 5
    assert len(m.genes) == ad.read_h5ad(slide).n_vars  # every gene is still modelled


def test_clear_error_exit_code(tmp_path, slide, capsys):
    rc = main(["train", str(slide), "--out", str(tmp_path / "m"), "--section-key", "slice"])
    assert rc == 2
    assert "'slice'" in capsys.readouterr().err


def test_demo_writes_report(tmp_path):
    rc = main(["demo", "--synthetic", "--out", str(tmp_path / "demo"), "--epochs", "2", "--n-cells", "1500",
               "--n-genes", "60"])
    assert rc == 0
    d = tmp_path / "demo"
    for f in ("report.md", "metrics.json", "figures/tokens.png", "figures/training.png", "figures/patch.png",
              "model/config.json"):
        assert (d / f).exists(), f
    assert (d / "slide.zarr").is_dir()
    m = json.loads((d / "metrics.json").read_text())
    assert m["codebook"]["tokens_used"] > 1
    assert m["source"].startswith("synthetic") and "deviance_explained" in m["reconstruction"]
    assert m["patch"]["cells"] > 0 and set(m["patch"]["scores"]) == {"SQuINT (defaults)", "neighbourhood average"}
    from napari_squint.io.read import read_slide

    back = read_slide(d / "slide.zarr")
    assert "squint_token" in back.obs and back.n_obs == m["n_cells"]
