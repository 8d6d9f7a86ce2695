"""CIFM behind the plugin's docks: train / save / load, the tokens dock, in-painting and injection.

Also the engine under the In-paint dock (``tasks.impute.Imputer`` with a CIFM model).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_squint import _constants as K

CIFM_TINY = dict(hidden=16, latent=8, layers=1, batch_size=256, tile_cells=64, mask_ratio=0.25, device="cpu",
                 num_threads=1, seed=0)


@pytest.fixture(scope="module")
def tiny_cifm(tissue_proto):
    """A CIFM model trained for 1 epoch on the tiny tissue (shared: treat as read-only)."""
    import torch

    from napari_squint.api.cifm import Cifm

    torch.set_num_threads(1)
    model = Cifm(tissue_proto, epochs=1, **CIFM_TINY)
    model.train()
    return model


@pytest.fixture
def cifm_trained(slide_widget, tiny_cifm):
    """The slide widget with the shared tiny CIFM model and its embeddings in obsm."""
    s = slide_widget.session
    s.set_model(tiny_cifm)
    tiny_cifm.embed(s.adata)
    s.mark_changed("embedding")
    return slide_widget


# ------------------------------------------------------------------ slide & model dock
def test_train_cifm_from_the_slide_widget(slide_widget):
    from napari_squint.api.cifm import Cifm

    w = slide_widget
    w.model_combo.setCurrentText("CIFM")
    assert w.model_choice().label == "CIFM"
    assert not w.codebook_spin.isEnabled() and not w.heads_spin.isEnabled()
    assert set(w.options()) == {"epochs", "device"}  # no SQuINT-only option reaches Cifm
    w.epochs_spin.setValue(1)
    job = w.train(**CIFM_TINY)
    assert w.last_error is None, w.last_error
    s = w.session
    assert isinstance(s.model, Cifm) and s.model_lacks_tokens and len(s.model.history) == 1
    emb = s.adata.obsm[K.CIFM_EMB_KEY]
    assert emb.shape == (900, 8) and np.isfinite(emb).all() and emb.std(0).max() > 0
    assert s.adata.obsm[K.CIFM_CELL_EMB_KEY].shape == (900, 8)
    assert s.adata.uns[K.UNS_KEY]["cifm_embed"]["params"]["key_added"] == K.CIFM_EMB_KEY
    assert K.TOKEN_KEY not in s.adata.obs  # CIFM has no tokens
    assert "trained 1 epochs" in w.status.text() and "CIFM has no tokens" in w.status.text()
    assert w.model_label.text().startswith("CIFM:") and "no tokens" in w.model_label.text()
    assert job.desc == "training CIFM" and s.dirty
    # the embedding is what the model gives for the slide
    ref = s.model.embed(s.adata, copy=True).obsm[K.CIFM_EMB_KEY]
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-6)


def test_save_and_load_a_cifm_model(cifm_trained, make_napari_viewer, tissue, tmp_path):
    from napari_squint._napari.slide_widget import SlideModelWidget
    from napari_squint.api.cifm import Cifm
    from napari_squint.api.load import folder_kind

    out = cifm_trained.save_model(tmp_path / "cifm_model")
    assert folder_kind(out) == "cifm"
    viewer2 = make_napari_viewer()
    w2 = SlideModelWidget(viewer2)
    assert w2.model_choice().label == "SQuINT"
    w2.session.set_slide(tissue.copy(), source={"format": "synthetic"})
    w2.show_cells()
    w2.load_model(out)
    assert w2.last_error is None, w2.last_error
    s2 = w2.session
    assert isinstance(s2.model, Cifm) and s2.model_dir == out
    assert w2.model_choice().label == "CIFM"  # the form follows the loaded model
    assert "CIFM has no tokens" in w2.status.text() and K.TOKEN_KEY not in s2.adata.obs
    np.testing.assert_allclose(s2.adata.obsm[K.CIFM_EMB_KEY],
                               cifm_trained.session.adata.obsm[K.CIFM_EMB_KEY], rtol=1e-5, atol=1e-6)


def test_tokens_dock_says_cifm_has_no_tokens(cifm_trained, viewer):
    from napari_squint._napari.tokens_widget import TokensWidget

    w = TokensWidget(viewer)
    viewer.window.add_dock_widget(w, name="Tokens")
    assert "CIFM has no tokens" in w.count_label.text()
    assert not w.assign_button.isEnabled()
    assert w.assign_tokens() is None
    assert "CIFM has no tokens" in str(w.last_error)
    w.last_error = None
    w.colour_by_token()
    assert "CIFM has no tokens" in str(w.last_error)
    w.dot_plot()  # no tokens: an error, not a crash
    assert w.last_error is not None


# ------------------------------------------------------------------ in-painting
def test_inpaint_a_polygon_with_cifm(cifm_trained, viewer, box, in_box):
    from napari_squint._napari.inpaint_widget import InpaintWidget

    w = InpaintWidget(viewer)
    viewer.window.add_dock_widget(w, name="In-paint")
    world, bounds = box(viewer, 0, frac=(0.4, 0.6))
    w.region.new_layer().add_polygons([world])
    w.impute()
    assert w.last_error is None, w.last_error
    out = w.output
    a = w.session.adata
    inside = in_box(a, "section_0", bounds)
    assert inside.sum() >= 5
    assert set(out.obs_names) == set(a.obs_names[inside])
    g = len(w.session.model.genes)
    for layer in (K.IMPUTED_LAYER, K.IMPUTED_NBR_LAYER):
        x = np.asarray(out.layers[layer])
        assert x.shape == (inside.sum(), g) and np.isfinite(x).all() and (x >= 0).all()
    assert (out.obs[K.TOKEN_KEY].astype(int) == -1).all()
    assert set(w.metrics) == {"CIFM", "neighbourhood average"}
    assert "CIFM" in w.status.text()
    assert out.uns[K.UNS_KEY]["impute"]["params"]["model_kind"] == "cifm"


def test_the_inpaint_dock_offers_cifms_donor_draw(cifm_trained, viewer, box, in_box):
    """With a CIFM model the profile list holds CIFM's draws; "sample" gives every cell a measured cell's profile."""
    from napari_squint._napari.inpaint_widget import InpaintWidget
    from napari_squint.data.imputation import log_normalise_rows

    w = InpaintWidget(viewer)
    viewer.window.add_dock_widget(w, name="In-paint")
    assert [w.draw_combo.itemText(i) for i in range(w.draw_combo.count())] == ["mean", "sample"]
    world, bounds = box(viewer, 0, frac=(0.4, 0.6))
    w.region.new_layer().add_polygons([world])
    w.draw_combo.setCurrentText("sample")
    w.impute()
    assert w.last_error is None, w.last_error
    assert w.output.uns[K.UNS_KEY]["impute"]["params"]["draw"] == "sample"
    a = w.session.adata
    genes = list(w.session.model.genes)
    measured = log_normalise_rows(np.asarray(a[:, genes].X.toarray(), dtype=np.float64))
    drawn = log_normalise_rows(np.asarray(w.output.layers[K.IMPUTED_LAYER], dtype=np.float64))
    own = {name: i for i, name in enumerate(a.obs_names)}
    for name, row in zip(w.output.obs_names, drawn):
        match = set(np.flatnonzero(np.abs(measured - row).max(1) < 1e-3).tolist()) - {own[name]}
        assert match, f"{name} got no measured cell's profile"


def _with_path(model, path):
    """A shallow copy of ``model`` whose config asks for ``impute_path=path`` (the shared model stays as it is)."""
    import copy
    import dataclasses

    other = copy.copy(model)
    other.config = dataclasses.replace(model.config, impute_path=path)
    return other


def test_imputer_with_cifm_oneshot_equals_impute_cells(tiny_cifm, tissue_proto):
    from napari_squint.tasks.impute import Imputer

    a = tissue_proto
    sec = (a.obs["section"] == "section_1").to_numpy()
    xy = np.asarray(a.obsm["spatial"], dtype=float)
    centre = np.median(xy[sec], axis=0)
    dist = np.where(sec, np.linalg.norm(xy - centre, axis=1), np.inf)
    mask = dist <= np.sort(dist)[119]  # the 120 cells nearest the centre: several rings deep
    imp = Imputer(tiny_cifm, a)
    one = imp.impute(mask=mask, method="oneshot")
    data = tiny_cifm.prepare(a)
    ref = _with_path(tiny_cifm, "oneshot").impute_cells(data, mask)
    np.testing.assert_allclose(np.asarray(one.layers[K.IMPUTED_LAYER]), ref["imputed"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(one.layers[K.IMPUTED_NBR_LAYER]), ref["imputed_nbr"], rtol=1e-4,
                               atol=1e-3)
    # infill: rings from the boundary inwards; each imputed cell sums to its section's observed median depth
    fill = imp.impute(mask=mask, method="infill")
    rings = fill.obs["squint_ring"].to_numpy()
    assert rings.min() == 1 and rings.max() >= 2
    lib = np.asarray(data.counts.sum(1)).ravel()
    depth = np.median(lib[sec & ~mask])
    np.testing.assert_allclose(np.asarray(fill.layers[K.IMPUTED_LAYER]).sum(1), depth, rtol=1e-4)
    # inner rings see the imputed outer rings in infill, only the learnt padding in one-shot
    assert not np.allclose(fill.layers[K.IMPUTED_LAYER], one.layers[K.IMPUTED_LAYER])
    with pytest.raises(ValueError, match="nbr_mode=.decoder.: CIFM offers"):
        imp.impute(mask=mask, nbr_mode="decoder")


def test_imputer_with_cifm_fills_an_empty_region(tiny_cifm, tissue_proto):
    import shapely
    from shapely.geometry import box

    from napari_squint.io.geojson import Region
    from napari_squint.tasks.impute import Imputer

    a = tissue_proto
    sec = (a.obs["section"] == "section_0").to_numpy()
    xy = np.asarray(a.obsm["spatial"], dtype=float)
    lo, hi = xy[sec].min(0), xy[sec].max(0)
    hole = box(*(lo + 0.4 * (hi - lo)), *(lo + 0.6 * (hi - lo)))
    cut = sec & shapely.contains_xy(hole, xy[:, 0], xy[:, 1])
    assert cut.sum() >= 5
    torn = a[~cut].copy()
    out = Imputer(tiny_cifm, torn).impute(regions=[Region("section_0", hole, "tear")])
    assert out.obs[K.CREATED_KEY].all() and out.n_obs >= 3
    x = np.asarray(out.layers[K.IMPUTED_LAYER])
    assert np.isfinite(x).all() and (x >= 0).all() and (x.sum(1) > 0).all()
    new_xy = out.obsm["spatial"]
    assert shapely.contains_xy(hole.buffer(1e-6), new_xy[:, 0], new_xy[:, 1]).all()


# ------------------------------------------------------------------ injection
def test_perturb_dock_offers_injection_with_cifm(cifm_trained, viewer):
    from napari_squint._napari.perturb_widget import MODES, PerturbWidget

    w = PerturbWidget(viewer)
    viewer.window.add_dock_widget(w, name="Perturb")
    assert w.mode() == "inject" and w.run_button.text() == "Run injection"
    items = w.mode_combo.model()
    labels = list(MODES)
    assert not items.item(labels.index("replace cells (SQuINT)")).isEnabled()
    assert items.item(labels.index("inject cells (CIFM)")).isEnabled()
    assert w.inject_combo.isVisibleTo(w) and not w.replace_combo.isVisibleTo(w)
    # forcing the SQuINT mode with a CIFM model is an error that says why
    w.mode_combo.setCurrentText("replace cells (SQuINT)")
    w.run()
    assert "CIFM has no tokens" in str(w.last_error)


def test_inject_cells_from_the_perturb_widget(cifm_trained, viewer, box, in_box):
    from napari_squint._napari.colours import DIM
    from napari_squint._napari.perturb_widget import (
        CHANGED_COLOUR,
        INJECTED_META,
        UNCHANGED_AFFECTED,
        PerturbWidget,
    )
    from napari_squint.tasks.inject import InjectionResult

    w = PerturbWidget(viewer)
    viewer.window.add_dock_widget(w, name="Perturb")
    a = w.session.adata
    world, bounds = box(viewer, 1, frac=(0.3, 0.7))
    w.region.new_layer().add_polygons([world])
    w.key_combo.setCurrentText("cell_type")
    cell_type = a.obs["cell_type"].astype(str).value_counts().index[1]
    w.inject_combo.setCurrentText(cell_type)
    w.n_inject_spin.setValue(6)
    w.steps_spin.setValue(2)
    w.run()
    assert w.last_error is None, w.last_error
    res = w.result
    assert isinstance(res, InjectionResult) and res.cell_type == cell_type and res.section == "section_1"
    # the transition table: every updated cell once, types x types
    counts = res.transition_counts
    assert counts.shape[0] == counts.shape[1] >= 2
    assert res.affected.size > 0 and int(counts.to_numpy().sum()) == res.affected.size
    assert (a.obs.loc[a.obs_names[res.affected], "section"] == "section_1").all()
    # injected cells inside the drawn box, drawn as an overlay
    xa, ya, xb, yb = bounds
    ix, iy = res.injected_coords.T
    assert res.injected_coords.shape == (6, 2) and ((ix > xa) & (ix < xb) & (iy > ya) & (iy < yb)).all()
    overlay = [lyr for lyr in viewer.layers if INJECTED_META in lyr.metadata]
    assert len(overlay) == 1 and len(overlay[0].data) == 6
    # updated cells coloured on the tissue, the rest dimmed
    colours = w.session.colours
    moved = res.before != res.after
    assert np.allclose(colours[res.affected[~moved]], UNCHANGED_AFFECTED)
    assert np.allclose(colours[res.affected[moved]], CHANGED_COLOUR)
    rest = np.setdiff1d(np.arange(a.n_obs), res.affected)
    assert np.allclose(colours[rest], DIM)
    # written to the slide, figures drawn in the perturbation panels
    step = a.obs["cifm_inject_step"].to_numpy()
    assert np.array_equal(np.flatnonzero(step >= 1), res.affected)
    assert w.transitions_panel.figure.axes and w.proportions_panel.figure.axes
    assert w.transitions_panel.isVisibleTo(w) and w.proportions_panel.isVisibleTo(w)
    assert f"{cell_type} cells (cell_type) injected into section_1" in w.summary_label.text()
    assert w.session.results["inject"] is res and w.session.dirty
    assert [r.name for r in w.session.regions] == ["inject_0"]
    # a second run replaces the overlay
    w.run()
    assert len([lyr for lyr in viewer.layers if INJECTED_META in lyr.metadata]) == 1
