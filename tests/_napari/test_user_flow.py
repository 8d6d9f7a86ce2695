"""What a biologist does, through the docks napari's Plugins menu opens (``add_plugin_dock_widget``).

Open a real MERFISH file (two sections), train, colour by cell type and by a
gene, in-paint a polygon and read its score, perturb a region, save, and reopen
the saved store in a fresh viewer with the saved model.
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

from napari_squint import _constants as K
from napari_squint._napari.layers import cell_layers
from napari_squint._napari.session import CELLS_META

pytest.importorskip("napari_squint.tasks.impute")

PLUGIN = "napari-squint"
DOCKS = ("Slide & model", "In-paint", "Tokens", "Activation score", "Perturb")


@pytest.fixture
def two_sections(merfish_path, tmp_path):
    import anndata as ad
    import pandas as pd

    a = ad.read_h5ad(merfish_path)
    keep = list(pd.unique(a.obs["section"].astype(str)))[:2]
    a = a[a.obs["section"].astype(str).isin(keep)].copy()
    path = tmp_path / "merfish_2sections.h5ad"
    a.write_h5ad(path)
    return path


def _dock_all(viewer) -> dict:
    docks = {}
    for name in DOCKS:
        docks[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]
        QApplication.processEvents()
    return docks


def _square(viewer, section: int, half: float = 0.06) -> np.ndarray:
    info = cell_layers(viewer)[section].metadata[CELLS_META]
    x0, y0, x1, y1 = info["bounds"]
    dy, dx = info["offset"]
    cx, cy, h = (x0 + x1) / 2, (y0 + y1) / 2, half * (x1 - x0)
    return np.array([[cy - h + dy, cx - h + dx], [cy - h + dy, cx + h + dx], [cy + h + dy, cx + h + dx],
                     [cy + h + dy, cx - h + dx]])


def test_a_biologists_flow_through_the_plugins_menu(two_sections, make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    d = _dock_all(viewer)
    slide, inpaint, tokens, perturb = d["Slide & model"], d["In-paint"], d["Tokens"], d["Perturb"]
    s = slide.session
    assert all(w.session is s for w in d.values())

    # open the file
    slide.open_slide(two_sections)
    assert slide.last_error is None, slide.last_error
    assert s.adata.n_obs > 10_000 and len(s.sections()) == 2
    assert len(cell_layers(viewer)) == 2

    # train (a short run for the test), with the progress in the dock and the real time at the end
    slide.epochs_spin.setValue(1)
    slide.train(batch_size=512)
    assert slide.last_error is None, slide.last_error
    assert s.model is not None and K.TOKEN_KEY in s.adata.obs
    assert slide.status.text().startswith("trained 1 epochs in ")
    assert tokens.legend.count() >= 2 and s.legend.title == "token"

    # colour by cell type, then by a gene
    slide.colour_panel.colour("cell_type")
    assert s.legend.categorical and "Inhibitory" in s.legend.labels
    assert "cell type" in cell_layers(viewer)[0].features.columns
    slide.colour_panel.colour("gene", "Gad1")
    assert s.legend.title == "Gad1" and not s.legend.categorical

    # in-paint a polygon and score it
    inpaint.region.new_layer().add_polygons([_square(viewer, 0)])
    inpaint.fill_check.setChecked(False)
    inpaint.impute()
    assert inpaint.last_error is None, inpaint.last_error
    n_in = inpaint.output.n_obs
    assert n_in >= 20
    assert set(inpaint.metrics) == {"SQuINT", "neighbourhood average"}
    inpaint.show_gene("Gad1")
    assert f"{n_in:,} imputed (in polygons)" in s.legend.caption()

    # perturb: an explicit region, the commonest type inside it replaced by astrocytes
    layer = perturb.region.new_layer()
    layer.add_polygons([_square(viewer, 1, half=0.1)])
    assert perturb.region.layer() is layer
    perturb.key_combo.setCurrentText("cell_type")
    perturb.replace_combo.setCurrentText("Inhibitory")
    perturb.proto_key_combo.setCurrentText("cell_type")
    perturb.proto_combo.setCurrentText("Astrocyte")
    perturb.run()
    assert perturb.last_error is None, perturb.last_error
    p = perturb.result.params
    assert p["n_perturbed"] > 0 and sum(perturb.key.counts) == s.adata.n_obs

    # save the results and the model
    store = slide.save_results()
    assert store == two_sections.with_name("merfish_2sections.squint.zarr") and not s.dirty
    model_dir = slide.save_model(tmp_path / "model")
    tokens_before = s.adata.obs[K.TOKEN_KEY].astype(int).to_numpy()

    # reopen the saved store in a fresh viewer: the results come back, the model loads
    viewer2 = make_napari_viewer()
    d2 = _dock_all(viewer2)
    slide2 = d2["Slide & model"]
    slide2.open_slide(store)
    assert slide2.last_error is None, slide2.last_error
    s2 = slide2.session
    assert s2 is not s and s2.adata.n_obs == s.adata.n_obs
    assert "saved results restored" in slide2.status.text()
    order = s.adata.obs_names.get_indexer(s2.adata.obs_names)
    assert np.array_equal(s2.adata.obs[K.TOKEN_KEY].astype(int).to_numpy(), tokens_before[order])
    assert K.PERTURBED_KEY in s2.adata.obs
    assert d2["Tokens"].legend.count() >= 2
    slide2.load_model(model_dir)
    assert slide2.last_error is None and s2.model is not None
    s.dirty = s2.dirty = False
