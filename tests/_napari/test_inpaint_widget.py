"""The In-paint dock: draw polygons, impute, compare with measured, hold out and retrain, empty-area fill."""

from __future__ import annotations

import numpy as np
import pytest

from napari_squint import _constants as K
from napari_squint._napari.inpaint_widget import InpaintWidget
from napari_squint._napari.layers import cell_layers

pytest.importorskip("napari_squint.tasks.impute")


@pytest.fixture
def inpaint_widget(trained, viewer):
    w = InpaintWidget(viewer)
    viewer.window.add_dock_widget(w, name="In-paint")
    return w


def _square(viewer, section: int, centre=(0.5, 0.5), half=0.12):
    info = cell_layers(viewer)[section].metadata[K.CELLS_LAYER_META]
    x0, y0, x1, y1 = info["bounds"]
    dy, dx = info["offset"]
    cx, cy = x0 + centre[0] * (x1 - x0), y0 + centre[1] * (y1 - y0)
    h = half * (x1 - x0)
    slide = np.array([[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h]])
    return np.column_stack([slide[:, 1] + dy, slide[:, 0] + dx]), slide


def test_impute_a_drawn_polygon(inpaint_widget, viewer):
    w = inpaint_widget
    world, slide = _square(viewer, 0)
    w.region.new_layer().add_polygons([world])
    w.impute()
    assert w.last_error is None, w.last_error
    out = w.output
    a = w.session.adata
    x, y = np.asarray(a.obsm["spatial"]).T
    inside = (a.obs["section"].to_numpy() == "section_0") & (x > slide[:, 0].min()) & (x < slide[:, 0].max()) \
        & (y > slide[:, 1].min()) & (y < slide[:, 1].max())
    assert set(out.obs_names) == set(a.obs_names[inside])
    assert out.layers[K.IMPUTED_LAYER].shape == (inside.sum(), len(w.session.model.genes))
    assert not out.obs[K.CREATED_KEY].any()
    # the gene on every cell: imputed inside, measured outside, one colour scale (the canvas and the close-up)
    gene = w.gene_combo.currentText()
    s = w.session
    assert s.legend.title == gene and "imputed" in s.legend.caption()
    from napari_squint._napari.colouring import gene_values

    values, flag = gene_values(a, gene, imputed=out)
    assert (flag == inside).all()
    assert np.array_equal(s.colour_values, values)
    assert s.legend.limits == (0.0, pytest.approx(values.max()))
    axes = w.figure.figure.axes
    assert len(axes) == 3  # measured, imputed, colour bar
    assert axes[0].yaxis_inverted()  # y down, as napari draws the section
    assert not [lyr for lyr in viewer.layers if lyr.name.startswith(("imputed ·", "measured ·"))]
    # metrics of SQuINT and of the neighbourhood average on the same cells, explained
    assert set(w.metrics) == {"SQuINT", "neighbourhood average"}
    assert -1 <= w.metrics["SQuINT"]["pc_cell"] <= 1
    assert "saw these cells" in w.metrics_label.text() and "higher is better" in w.metrics_label.text()
    assert "Pearson" in w.metrics_table.verticalHeaderItem(0).toolTip()
    assert w.metrics_table.columnCount() == 2 and w.metrics_table.rowCount() == 4
    assert list(w._table()["method"]) == ["SQuINT", "neighbourhood average"]
    assert w.session.results["impute"] is out and w.session.dirty
    assert [r.section for r in w.session.regions] == ["section_0"]
    # another gene re-colours without recomputing; the slide was prepared once and is reused
    imputer = s.cache["imputer"]
    other = w.gene_combo.itemText((w.gene_combo.currentIndex() + 1) % w.gene_combo.count())
    w.show_gene(other)
    assert s.legend.title == other
    w.impute()
    assert w.last_error is None and s.cache["imputer"] is imputer
    assert "prepare" not in w.status.text() and "impute" in w.status.text()


def test_generated_counts_are_a_choice(inpaint_widget, viewer):
    w = inpaint_widget
    world, _ = _square(viewer, 0)
    w.region.new_layer().add_polygons([world])
    w.draw_combo.setCurrentText("sample")
    w.impute()
    assert w.last_error is None, w.last_error
    x = w.output.layers[K.IMPUTED_LAYER]
    assert w.output.uns["squint"]["impute"]["params"]["draw"] == "sample"
    assert np.all(x == np.round(x))  # generated counts are integers; expected counts are not
    assert w.output.uns["squint"]["impute"]["params"]["residual"] is False  # no correction of generated counts


def test_residual_correction_is_a_choice(inpaint_widget, viewer):
    w = inpaint_widget
    world, _ = _square(viewer, 0)
    w.region.new_layer().add_polygons([world])
    w.draw_combo.setCurrentText("logmean")
    assert w.residual_check.isChecked()  # on by default
    w.impute()
    assert w.last_error is None, w.last_error
    assert w.output.uns["squint"]["impute"]["params"]["residual"] is True
    w.residual_check.setChecked(False)
    w.impute()
    assert w.last_error is None, w.last_error
    assert w.output.uns["squint"]["impute"]["params"]["residual"] is False


def test_impute_an_empty_area_places_new_cells(inpaint_widget, viewer):
    w = inpaint_widget
    info = cell_layers(viewer)[1].metadata[K.CELLS_LAYER_META]
    a = w.session.adata
    sec = a.obs["section"].to_numpy() == "section_1"
    xy = np.asarray(a.obsm["spatial"])[sec]
    # carve a hole: drop the cells of a small square from the slide, then draw over it
    world, slide = _square(viewer, 1, half=0.1)
    x, y = xy.T
    hole = (x > slide[:, 0].min()) & (x < slide[:, 0].max()) & (y > slide[:, 1].min()) & (y < slide[:, 1].max())
    keep = np.ones(a.n_obs, dtype=bool)
    keep[np.flatnonzero(sec)[hole]] = False
    w.session.set_slide(a[keep].copy(), source={"format": "synthetic"})
    w.session.set_model(w.session.model if w.session.model is not None else None)
    from napari_squint._napari.dock import show_cells

    show_cells(viewer, w.session)
    layer = w.region.new_layer()
    layer.add_polygons([world])
    w.impute()
    assert w.last_error is None, w.last_error
    out = w.output
    assert out.obs[K.CREATED_KEY].all() and out.n_obs >= 3
    assert "new cells" in w.status.text()
    assert "nothing to score" in w.metrics_label.text()
    assert info["section"] == "section_1"


def test_hold_out_and_retrain(inpaint_widget, viewer, tiny):
    w = inpaint_widget
    w.session.train_options = {k: v for k, v in tiny.items() if k != "epochs"}
    world, _ = _square(viewer, 0, centre=(0.4, 0.6))
    w.region.new_layer().add_polygons([world])
    w.holdout_check.setChecked(True)
    w.epochs_spin.setValue(1)
    w.impute()
    assert w.last_error is None, w.last_error
    held = w.session.adata.obs[K.HELDOUT_KEY].to_numpy()
    honest = w.session.results["holdout_model"]
    assert honest is not w.session.model
    assert set(w.output.obs_names) == set(w.session.adata.obs_names[held])
    assert not set(honest.data.obs_names) & set(w.output.obs_names)  # never trained on them
    assert "honest" in w.metrics_label.text()
