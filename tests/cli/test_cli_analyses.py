"""``squint explain / stratify / perturb / stack`` end to end on a tiny synthetic slide."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from napari_squint.cli.main import main


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 2-section slide (.h5ad, with z), a ROI on section_0 and a tiny trained model folder."""
    from shapely.geometry import box

    from napari_squint.api.squint import Squint
    from napari_squint.data.synthetic import make_tissue
    from napari_squint.io.geojson import Region, write_polygons

    d = tmp_path_factory.mktemp("cli_analyses")
    ad = make_tissue(n_cells=1200, n_genes=30, n_sections=2, n_cell_types=5, seed=4)
    ad.obs["z"] = ad.obs["section"].cat.codes.astype(float) * 50.0
    ad.write_h5ad(d / "slide.h5ad")
    xy = np.asarray(ad.obsm["spatial"])
    on = (ad.obs["section"] == "section_0").to_numpy()
    lo, hi = xy[on].min(0), xy[on].max(0)
    mid, w = (lo + hi) / 2, (hi - lo) * 0.3
    write_polygons([Region("section_0", box(*(mid - w), *(mid + w)), "roi")], d / "roi.geojson")
    model = Squint(ad, epochs=2, codebook_size=8, heads=1, latent=16, hidden=32, batch_size=256, seed=0, device="cpu")
    model.train()
    model.save(d / "model")
    return d


def test_explain(files, capsys):
    d = files
    sha = _sha(d / "slide.h5ad")
    rc = main(["explain", str(d / "model"), str(d / "slide.h5ad"), "--out", str(d / "explain"),
               "--programme", "gene_0001", "gene_0002", "--condition-key", "condition"])
    assert rc == 0
    out = d / "explain"
    summ = pd.read_csv(out / "tokens_summary.csv", index_col=0)
    assert summ["n_cells"].sum() == 1200
    prog = pd.read_csv(out / "programme.csv")
    assert set(prog["gene"]) == {"gene_0001", "gene_0002"}
    for f in ("token_cell_types.png", "programme_dotplot.png", "cooccurrence.png"):
        assert (out / "figures" / f).stat().st_size > 1000
    info = json.loads((out / "summary.json").read_text())
    assert info["n_tokens"] == len(summ) and info["cooccurrence_levels"] == 2
    assert _sha(d / "slide.h5ad") == sha


def test_stratify(files):
    import anndata

    d = files
    sha = _sha(d / "slide.h5ad")
    out = d / "strat" / "case.h5ad"
    rc = main(["stratify", str(d / "model"), str(d / "slide.h5ad"), "--condition", "condition", "--group", "case",
               "--top-k", "3", "--out", str(out)])
    assert rc == 0
    a = anndata.read_h5ad(out)
    s = a.obs["squint_activation"].to_numpy()
    assert s.min() >= 0 and s.max() <= 1
    top = a.uns["squint"]["stratify"]["top_tokens"]
    assert len(top) == 3
    assert (d / "strat" / "case_activation.png").exists() and (d / "strat" / "case_enrichment.csv").exists()
    info = json.loads((d / "strat" / "case_summary.json").read_text())
    assert info["top_tokens"] == list(top)
    assert _sha(d / "slide.h5ad") == sha
    rc = main(["stratify", str(d / "model"), str(d / "slide.h5ad"), "--condition", "condition", "--group", "nope",
               "--out", str(d / "strat" / "bad.h5ad")])
    assert rc == 2


def test_perturb(files):
    d = files
    sha = _sha(d / "slide.h5ad")
    out = d / "pert"
    rc = main(["perturb", str(d / "model"), str(d / "slide.h5ad"), "--region", str(d / "roi.geojson"),
               "--replace", "T_cell", "--prototype", "Tumour", "--responders", "Macrophage", "--out", str(out),
               "--write-h5ad"])
    assert rc == 0
    info = json.loads((out / "summary.json").read_text())
    assert info["n_perturbed"] > 0 and info["n_responders"] > 0
    t = pd.read_csv(out / "transitions.csv", index_col=0)
    assert int(t.to_numpy().sum()) == info["n_changed_responders"]
    tp = pd.read_csv(out / "token_proportions.csv", index_col=0)
    np.testing.assert_allclose(tp[["before", "after"]].sum(), 1.0)
    assert (out / "figures" / "transitions.png").exists() and (out / "figures" / "map.png").exists()
    import anndata

    a = anndata.read_h5ad(out / "perturbed.h5ad")
    assert int(a.obs["squint_perturbed"].sum()) == info["n_perturbed"]
    assert _sha(d / "slide.h5ad") == sha
    rc = main(["perturb", str(d / "model"), str(d / "slide.h5ad"), "--region", str(d / "roi.geojson"),
               "--replace", "Unicorn", "--prototype", "Tumour", "--responders", "Macrophage", "--out", str(out)])
    assert rc == 2


def test_stack(files):
    d = files
    out = d / "stack"
    rc = main(["stack", str(d / "model"), str(d / "slide.h5ad"), "--z-key", "z", "--out", str(out),
               "--epochs", "1", "--gene-groups", "5", "all", "--top-n", "10"])
    assert rc == 0
    rep = pd.read_csv(out / "report_section_x_nbr.csv", index_col=0)
    assert list(rep.index) == [0.0, 50.0] and list(rep.columns) == ["top 5", "all 30"]
    genes = pd.read_csv(out / "genes_section.csv", index_col=0)
    assert sorted(genes["rank_nbr"]) == list(range(1, 31))
    info = json.loads((out / "summary.json").read_text())
    assert info["n_heldout"] == 120 and info["epochs"] == 1
    assert (out / "figures" / "stack_report.png").exists() and (out / "model_section" / "config.json").exists()
    rc = main(["stack", str(d / "model"), str(d / "slide.h5ad"), "--z-key", "z", "--out", str(out),
               "--filter", "section=section_0"])
    assert rc == 2  # a single level is not a stack
