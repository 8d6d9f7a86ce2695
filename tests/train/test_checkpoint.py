import json

import numpy as np
import pytest

from napari_squint.api.squint import Squint
from napari_squint.data.validate import SlideError


def test_roundtrip_gives_identical_tokens(tmp_path, trained_tiny, tissue):
    a = tissue.copy()
    trained_tiny.tokens(a)
    path = trained_tiny.save(tmp_path / "model")
    assert {p.name for p in path.iterdir()} == {"model.safetensors", "config.json", "genes.txt", "meta.json",
                                                ".squint-output.json"}
    loaded = Squint.load(path, device="cpu")
    b = tissue.copy()
    loaded.tokens(b)
    assert (a.obs["squint_token"].to_numpy() == b.obs["squint_token"].to_numpy()).all()
    np.testing.assert_allclose(a.obsm["squint_latent"], b.obsm["squint_latent"], atol=1e-5)
    assert loaded.genes == trained_tiny.genes
    assert json.loads((path / "meta.json").read_text())["model"] == "squint"


def test_no_pickle_in_checkpoint(tmp_path, trained_tiny):
    path = trained_tiny.save(tmp_path / "m")
    raw = (path / "model.safetensors").read_bytes()
    assert b"\x80\x04" not in raw[:64]  # not a pickle stream
    # overwriting (of the tool's own folder, when asked) is atomic: no temp folders left behind
    trained_tiny.save(tmp_path / "m", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_gene_mismatch_is_a_clear_error(trained_tiny, tissue):
    other = tissue[:, 5:].copy()
    with pytest.raises(SlideError, match="trained on other genes"):
        trained_tiny.tokens(other)
    trained_tiny.tokens(other, align=True)  # explicit alignment works
    assert "squint_token" in other.obs


def test_missing_files_named(tmp_path):
    (tmp_path / "bad").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        Squint.load(tmp_path / "bad")
