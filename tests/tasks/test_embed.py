"""Embeddings: linear probes (cross-validated ROC-AUC) and the k-NN cross-sample fraction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData

from napari_squint.api.cifm import Cifm
from napari_squint.data.synthetic import make_tissue
from napari_squint.tasks.embed import knn_cross_sample_fraction, linear_probe, probe_table


def blobs(n=600, sep=3.0, seed=0) -> AnnData:
    """Two samples (sections) per label, the label shifting the embedding by ``sep``."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    section = np.where(label == 1, rng.choice(["s2", "s3"], n), rng.choice(["s0", "s1"], n))
    emb = rng.normal(size=(n, 4))
    emb[:, 0] += sep * label
    ad = AnnData(X=np.zeros((n, 1), np.float32),
                 obs=pd.DataFrame({"label": label.astype(str), "section": section},
                                  index=[f"c{i}" for i in range(n)]))
    ad.obsm["emb"] = emb
    ad.obsm["noise"] = rng.normal(size=(n, 4))
    return ad


def test_linear_probe_separates_informative_from_noise():
    ad = blobs()
    good = linear_probe(ad, obsm_key="emb", label_key="label")
    bad = linear_probe(ad, obsm_key="noise", label_key="label")
    assert good["roc_auc"] > 0.95 and 0.35 < bad["roc_auc"] < 0.65
    assert good["classes"] == ["0", "1"] and good["n_splits"] == 5
    assert "emb:label" in ad.uns["squint"]["linear_probe"]


def test_linear_probe_grouped_folds_and_multiclass():
    ad = blobs()
    grouped = linear_probe(ad, obsm_key="emb", label_key="label", groups_key="section")
    assert grouped["grouped"] and grouped["n_splits"] == 4 and grouped["roc_auc"] > 0.9
    ad.obs["multi"] = ad.obs["section"]
    ad.obsm["emb"][:, 1] += 4 * (ad.obs["section"].isin(["s1", "s3"])).to_numpy()
    multi = linear_probe(ad, obsm_key="emb", label_key="multi")
    assert len(multi["classes"]) == 4 and multi["roc_auc"] > 0.9
    with pytest.raises(KeyError, match="nope"):
        linear_probe(ad, obsm_key="emb", label_key="nope")
    table = probe_table(ad, obsm_keys=["emb", "noise"], label_keys=["label"])
    assert table.loc["emb", "label"] > table.loc["noise", "label"]


def test_knn_fraction_rows_sum_to_100_and_detect_shared_samples():
    ad = blobs(sep=8.0)
    df = knn_cross_sample_fraction(ad, obsm_key="emb", sample_key="section", k=20)
    assert list(df.index) == ["s0", "s1", "s2", "s3"]
    np.testing.assert_allclose(df.sum(1), 100.0)
    # s0/s1 share the label-0 blob, s2/s3 the label-1 blob: no neighbours across blobs
    assert df.loc["s0", ["s2", "s3"]].sum() < 1 and df.loc["s2", ["s0", "s1"]].sum() < 1
    assert df.loc["s0", "s1"] > 30
    assert "emb" in ad.uns["squint"]["knn_cross_sample"]
    with pytest.raises(ValueError, match="k must"):
        knn_cross_sample_fraction(ad, obsm_key="emb", sample_key="section", k=10**6)


def test_cifm_embeddings_probe_end_to_end():
    torch.set_num_threads(1)
    ad = make_tissue(n_cells=700, n_genes=24, n_sections=2, n_cell_types=4, seed=4)
    model = Cifm(ad, epochs=1, hidden=16, latent=8, layers=1, batch_size=256, tile_cells=64, device="cpu")
    model.train()
    model.embed(ad)
    res = linear_probe(ad, obsm_key="cifm_cell", label_key="cell_type")
    assert 0.5 <= res["roc_auc"] <= 1.0 and res["n_cells"] == ad.n_obs
    df = knn_cross_sample_fraction(ad, obsm_key="cifm_microenv", sample_key="section", k=10)
    np.testing.assert_allclose(df.sum(1), 100.0)
