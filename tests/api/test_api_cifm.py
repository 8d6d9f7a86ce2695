"""Cifm user API: same interface as Squint, imputation semantics, save/load, options."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from napari_squint.api.cifm import Cifm, NoTokensError, counts_from_log
from napari_squint.data.synthetic import make_tissue
from napari_squint.config import CifmConfig
from napari_squint.train.events import Cancelled

SMALL = dict(hidden=16, latent=8, layers=1, batch_size=128, tile_cells=64, device="cpu", seed=0)


@pytest.fixture(scope="module")
def tissue():
    torch.set_num_threads(1)
    return make_tissue(n_cells=700, n_genes=24, n_sections=2, n_cell_types=4, seed=1)


@pytest.fixture(scope="module")
def trained(tissue):
    hold = np.zeros(tissue.n_obs, dtype=bool)
    hold[:40] = True
    model = Cifm(tissue, holdout=hold, epochs=2, **SMALL)
    model.train()
    return model, hold


def test_constructor_and_attributes(trained, tissue):
    model, hold = trained
    assert model.genes == list(tissue.var_names)
    assert model.sections == sorted(tissue.obs["section"].astype(str).unique())
    assert model.section_key == "section" and model.spatial_key == "spatial"
    assert model.data.n_cells == tissue.n_obs - hold.sum()
    assert len(model.history) == 2 and all(np.isfinite(h["loss"]) for h in model.history)
    assert model.meta["mean_degree"] > 3  # the default radius gives a connected graph
    assert "Cifm(" in repr(model)


def test_train_continues_and_is_cancellable(tissue):
    model = Cifm(tissue, epochs=3, **SMALL)
    events = []

    def stop_after_first_epoch(ev):
        events.append(ev.stage)
        if ev.stage == "epoch":
            raise Cancelled

    hist = model.train(callback=stop_after_first_epoch)
    assert model.meta["cancelled"] is True and len(hist) == 1 and events[0] == "prepare"
    more = model.train(epochs=1)
    assert [h["epoch"] for h in model.history] == [1, 2]
    assert len(more) == 1


def test_squint_options_and_unknown_options_raise(tissue):
    with pytest.raises(ValueError, match="unknown CIFM option 'codebook_size'"):
        Cifm(tissue, codebook_size=16, epochs=1, **SMALL)
    with pytest.raises(ValueError, match="unknown CIFM option 'nonsense'"):
        Cifm(tissue, nonsense=1, **SMALL)
    with pytest.raises(ValueError, match="mask_ratio"):
        CifmConfig(mask_ratio=1.5)


def test_val_frac_holds_whole_tiles_out_of_the_loss(tissue):
    model = Cifm(tissue, epochs=4, val_frac=0.15, patience=1, **SMALL)
    val = model.validation_cells()
    # whole tiles, about 15 % of the cells, the same on every call (drawn from the model's seed)
    assert 0.05 * model.data.n_cells < val.size < 0.3 * model.data.n_cells
    assert np.isin(np.flatnonzero(np.isin(model.graph.tile, model.graph.tile[val])), val).all()
    np.testing.assert_array_equal(val, model.validation_cells())
    assert not np.array_equal(val, Cifm(tissue, epochs=1, val_frac=0.15, **{**SMALL, "seed": 5}).validation_cells())
    hist = model.train()
    assert model.meta["validation_cells"] == val.size
    assert 1 <= len(hist) <= 4 and all(np.isfinite(h["val_loss"]) for h in hist)
    assert Cifm(tissue, epochs=1, val_frac=0.0, **SMALL).validation_cells().size == 0  # off: every cell trains
    with pytest.raises(ValueError, match="val_frac"):
        Cifm(tissue, val_frac=1.0, **SMALL)


def test_radius_default_is_unit_free(tissue):
    scaled = tissue.copy()
    scaled.obsm["spatial"] = scaled.obsm["spatial"] * 37.0
    a = Cifm(tissue, epochs=1, **SMALL)
    b = Cifm(scaled, epochs=1, **SMALL)
    assert (a.graph.adj != b.graph.adj).nnz == 0
    np.testing.assert_allclose(a.graph.coords, b.graph.coords, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(b.graph.radius, a.graph.radius * 37.0, rtol=1e-5)
    # an explicit radius is in slide units
    c = Cifm(tissue, radius=float(a.graph.radius[0]), epochs=1, **SMALL)
    assert abs(c.graph.radius[0] - a.graph.radius[0]) < 1e-9


def test_impute_cells_keys_and_semantics(trained, tissue):
    model, hold = trained
    from napari_squint.api.squint import Squint  # the keys must match Squint's

    data = model.prepare(tissue)
    res = model.impute_cells(data, hold)
    assert {"imputed", "imputed_nbr", "tokens", "codes", "latent", "cells"} <= set(res)
    m = hold.sum()
    assert res["imputed"].shape == (m, data.n_genes) and res["imputed_nbr"].shape == (m, data.n_genes)
    assert res["latent"].shape == (m, model.config.latent)
    assert (res["tokens"] == -1).all() and res["codes"].shape == (m, 0)
    np.testing.assert_array_equal(res["cells"], np.flatnonzero(hold))
    # library: the median observed library of the section, as in Squint
    lib = data.library()
    for i, c in enumerate(res["cells"][:5]):
        sec = data.batch == data.batch[c]
        assert res["imputed"][i].sum() == pytest.approx(np.median(lib[sec & ~hold]), rel=1e-6)
    # imputed_nbr: measured observed members + imputed masked members of the kNN table
    i = 0
    c = res["cells"][i]
    members = [c] + [j for j in data.nbr[c] if j >= 0]
    exp = np.zeros(data.n_genes)
    for j in members:
        if hold[j]:
            exp += res["imputed"][list(res["cells"]).index(j)]
        else:
            exp += data.counts[j].toarray().ravel()
    np.testing.assert_allclose(res["imputed_nbr"][i], exp, rtol=1e-6)
    assert hasattr(Squint, "impute_cells")


def test_masked_cells_do_not_leak(trained, tissue):
    """A masked cell's own expression never influences its imputation."""
    model, hold = trained
    data = model.prepare(tissue)
    res = model.impute_cells(data, hold)
    rng = np.random.default_rng(0)
    cells = np.flatnonzero(hold)
    changed = data.replace_counts(cells, rng.integers(0, 50, size=(cells.size, data.n_genes)))
    res2 = model.impute_cells(changed, hold)
    np.testing.assert_allclose(res2["imputed"], res["imputed"], rtol=1e-5, atol=1e-6)


def test_tiled_inference_matches_whole_graph(trained, tissue):
    """Chunked inference with the receptive-field halo equals one pass on the whole graph."""
    model, hold = trained
    data = model.prepare(tissue)
    graph = model.graph_of(data)
    tiny = CifmConfig(**{**model.config.to_dict(), "infer_cells": 50})
    from napari_squint.models.cifm_infer import reconstruct_tiled

    cells = np.flatnonzero(hold)
    a = reconstruct_tiled(model.module, graph, hold, cells, tiny, model.device)
    with torch.no_grad():
        ei = torch.from_numpy(np.stack(graph.adj.nonzero()).astype(np.int64))
        x = torch.from_numpy(graph.x_in.toarray())
        full = model.module.forward_masked(x, torch.from_numpy(graph.coords.astype(np.float32)),
                                           torch.from_numpy(hold), ei).numpy()
    np.testing.assert_allclose(a, full, rtol=1e-4, atol=1e-5)


def test_embed_writes_obsm_and_tokens_raise(trained, tissue):
    model, _ = trained
    ad = tissue.copy()
    out = model.embed(ad, copy=True)
    assert "cifm_microenv" not in ad.obsm
    assert out.obsm["cifm_microenv"].shape == (ad.n_obs, model.config.latent)
    assert out.obsm["cifm_cell"].shape == (ad.n_obs, model.config.latent)
    assert "cifm_embed" in out.uns["squint"]
    # cell embeddings ignore neighbours: equal expression gives equal embeddings wherever the cells are;
    # microenvironment embeddings do not
    data = model.prepare(ad)
    twin = data.replace_counts(np.array([1]), data.counts[0].toarray())
    cell = model.embed_cells(twin)
    np.testing.assert_allclose(cell[1], cell[0], rtol=1e-5, atol=1e-6)
    micro = model.encode(twin, cells=np.array([0, 1]))["latent"]
    assert not np.allclose(micro[0], micro[1])
    with pytest.raises(NoTokensError, match="no tokens"):
        model.tokens(ad)


def test_save_load_roundtrip(trained, tissue, tmp_path):
    model, hold = trained
    path = model.save(tmp_path / "cifm")
    assert (path / "model.safetensors").exists()
    assert json.loads((path / "meta.json").read_text())["model"] == "cifm"
    loaded = Cifm.load(path)
    assert loaded.genes == model.genes and loaded.sections == model.sections
    assert loaded.history == model.history
    data = model.prepare(tissue)
    np.testing.assert_allclose(loaded.impute_cells(data, hold)["imputed"],
                               model.impute_cells(data, hold)["imputed"], rtol=1e-6)
    from napari_squint.cli.common import load_model

    assert isinstance(load_model(path), Cifm)
    from napari_squint.api.squint import Squint
    from napari_squint.data.validate import SlideError

    with pytest.raises(SlideError, match="not SQuINT"):
        Squint.load(path)


def test_counts_from_log_roundtrip():
    counts = np.array([[3.0, 0.0, 7.0], [1.0, 1.0, 0.0]])
    lib = counts.sum(1)
    x = np.log1p(counts / lib[:, None] * 1e4)
    np.testing.assert_allclose(counts_from_log(x, lib), counts, rtol=1e-9)


def test_training_beats_the_mean_on_a_structured_tissue():
    """After a short training the masked loss is below the untrained model's."""
    torch.set_num_threads(1)
    ad = make_tissue(n_cells=900, n_genes=20, n_sections=1, n_cell_types=4, seed=3)
    model = Cifm(ad, epochs=6, lr=5e-3, mask_ratio=0.2, **{**SMALL, "layers": 1})
    before = model.masked_loss(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.train()
    after = model.masked_loss(seed=1)
    assert after < before


def test_cli_train_model_cifm(tissue, tmp_path, capsys):
    from napari_squint.cli.main import main
    from napari_squint.io.write import write_h5ad

    path = tmp_path / "slide.h5ad"
    write_h5ad(tissue, path)
    # a SQuINT-only option is refused, naming it
    assert main(["train", str(path), "--out", str(tmp_path / "bad"), "--model", "cifm", "--epochs", "1",
                 "--device", "cpu", "--heads", "2"]) == 2
    assert not (tmp_path / "bad").exists()
    rc = main(["train", str(path), "--out", str(tmp_path / "m"), "--model", "cifm", "--epochs", "1",
               "--device", "cpu", "--batch-size", "128", "--k", "6"])
    assert rc == 0
    model = Cifm.load(tmp_path / "m")
    assert model.config.epochs == 1 and model.config.k == 6 and len(model.history) == 1
    assert model.config.val_frac == 0.1 and np.isfinite(model.history[0]["val_loss"])  # the default validates
    assert f"validation {model.history[0]['val_loss']:.4f} (best: epoch 1)" in capsys.readouterr().err
    assert main(["train", str(path), "--out", str(tmp_path / "m0"), "--model", "cifm", "--epochs", "1",
                 "--device", "cpu", "--val-frac", "0"]) == 0
    plain = Cifm.load(tmp_path / "m0")
    assert plain.config.val_frac == 0.0 and "val_loss" not in plain.history[0]
    # a bad value names the option and writes nothing
    assert main(["train", str(path), "--out", str(tmp_path / "m1"), "--model", "cifm", "--val-frac", "1.5"]) == 2
    assert not (tmp_path / "m1").exists()


def test_benchmark_extra_method_returns_counts(tissue):
    from napari_squint.api.cifm import make_benchmark_method

    hold = np.zeros(tissue.n_obs, dtype=bool)
    hold[100:130] = True
    test = np.flatnonzero(hold)[::2]
    opts = {k: v for k, v in SMALL.items() if k != "seed"}
    fn = make_benchmark_method(epochs=1, **opts)
    x, xn = fn(tissue, hold, test, 0)
    assert x.shape == (test.size, tissue.n_vars) and xn.shape == x.shape
    assert (x >= 0).all() and (xn >= x - 1e-9).all()
    # trained with the run's seed: another run seed gives another model; a fixed seed ignores the run's
    assert not np.allclose(fn(tissue, hold, test, 1)[0], x)
    np.testing.assert_allclose(make_benchmark_method(epochs=1, seed=0, **opts)(tissue, hold, test, 1)[0], x)
    # its settings, defaults resolved, for the benchmark's record
    assert fn.settings["epochs"] == 1 and fn.settings["loss"] == "balanced_mse_capped"
    assert fn.settings["seed"] == "the run's seed" and make_benchmark_method(seed=3).settings["seed"] == 3
    assert make_benchmark_method(loss="mse").settings["loss"] == "mse"
    # the last call's training, for the benchmark's record
    assert fn.last_training["epochs"] == 1 and fn.last_training["validation_cells"] > 0


def test_impute_locations_matches_masking_an_existing_cell(trained, tissue):
    """A new cell placed exactly where a masked cell is gets that cell's imputation."""
    model, _ = trained
    sec = str(tissue.obs["section"].cat.categories[0])
    rows = np.flatnonzero((tissue.obs["section"] == sec).to_numpy())
    target = rows[10]
    masked = np.zeros(tissue.n_obs, dtype=bool)
    masked[target] = True
    new = model.impute_locations(tissue, tissue.obsm["spatial"][[target]], section=sec, masked=masked)
    data = model.prepare(tissue[rows])
    ref = model.reconstruct(data, masked[rows])
    np.testing.assert_allclose(new["x_log"], ref, rtol=1e-4, atol=1e-5)
    assert new["imputed"].shape == (1, tissue.n_vars) and model.kind == "cifm"
    with pytest.raises(ValueError, match="pass section"):
        model.impute_locations(tissue, np.zeros((1, 2)))


def test_impute_path_infill_and_poisson_options(tissue):
    hold = np.zeros(tissue.n_obs, dtype=bool)
    xy = tissue.obsm["spatial"]
    sec0 = (tissue.obs["section"].astype(str) == tissue.obs["section"].astype(str).iloc[0]).to_numpy()
    centre = xy[np.flatnonzero(sec0)[0]]
    hold[np.flatnonzero(sec0)[np.argsort(np.hypot(*(xy[sec0] - centre).T))[:60]]] = True  # a contiguous patch
    model = Cifm(tissue, holdout=hold, epochs=1, loss="poisson", blob_frac=0.5, min_steps=4, **SMALL)
    model.train()
    data = model.prepare(tissue)
    assert model.config.impute_path == "infill"  # the default (chosen on MERFISH Animal 1)
    model.config.impute_path = "oneshot"
    one = model.impute_cells(data, hold)
    model.config.impute_path = "infill"
    inf = model.impute_cells(data, hold)
    m = int(hold.sum())
    for res in (one, inf):
        assert res["imputed"].shape == (m, data.n_genes) and np.isfinite(res["imputed"]).all()
        assert res["imputed_nbr"].shape == (m, data.n_genes)
    assert not np.allclose(one["imputed"], inf["imputed"])  # deeper cells now read earlier rings
    with pytest.raises(ValueError, match="impute_path"):
        Cifm(tissue, impute_path="rings", **SMALL)
    with pytest.raises(ValueError, match="loss"):
        Cifm(tissue, loss="nb", **SMALL)
