"""The Perturb dock: paint a region (Shapes or Labels), replace a cell type, read the transitions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_squint import _constants as K
from napari_squint._napari.layers import cell_layers
from napari_squint._napari.perturb_widget import CHANGED_COLOUR, PERTURBED_COLOUR, PerturbWidget


@pytest.fixture
def perturb_widget(trained, viewer):
    w = PerturbWidget(viewer)
    viewer.window.add_dock_widget(w, name="Perturb")
    return w


def test_perturb_a_polygon_region(perturb_widget, viewer, box, in_box):
    w = perturb_widget
    a = w.session.adata
    world, bounds = box(viewer, 1)
    shapes = w.region.new_layer()
    shapes.add_polygons([world])
    inside = in_box(a, "section_1", bounds)
    replace = a.obs.loc[inside, "cell_type"].value_counts().index[0]
    w.key_combo.setCurrentText("cell_type")
    w.replace_combo.setCurrentText(replace)
    proto = [w.proto_combo.itemText(i) for i in range(w.proto_combo.count()) if w.proto_combo.itemText(i) != replace][0]
    w.proto_combo.setCurrentText(proto)
    w.run()
    assert w.last_error is None, w.last_error
    res = w.result
    expected = inside & (a.obs["cell_type"].astype(str).to_numpy() == replace)
    assert np.array_equal(res.perturbed, expected)
    assert np.array_equal(a.obs[K.PERTURBED_KEY].to_numpy(), expected)
    before = a.obs[K.TOKEN_BEFORE_KEY].astype(int).to_numpy()
    after = a.obs[K.TOKEN_AFTER_KEY].astype(int).to_numpy()
    assert np.array_equal(before, a.obs[K.TOKEN_KEY].astype(int).to_numpy())
    changed = np.flatnonzero(before != after)
    assert set(changed) == set(res.changed["index"])
    # colours: perturbed cells blue, changed (not perturbed) cells orange
    colours = w.session.colours
    assert np.allclose(colours[expected], PERTURBED_COLOUR)
    only_changed = np.setdiff1d(changed, np.flatnonzero(expected))
    assert np.allclose(colours[only_changed], CHANGED_COLOUR)
    # the heat map (or its "nothing changed" note) and the proportion bars are drawn
    assert w.transitions_panel.figure.axes and w.proportions_panel.figure.axes
    assert w.transitions_panel.isVisibleTo(w) and w.proportions_panel.isVisibleTo(w)
    props = res.transition_proportions
    if props.size:
        assert np.allclose(props.sum(1), 1.0)
        assert all(props.loc[t, t] == 0 for t in props.index if t in props.columns)
    assert "given the profile of cell_type = " + proto in w.summary_label.text()
    assert [r.name for r in w.session.regions] == ["perturb_0"]
    assert w.session.regions[0].section == "section_1"


def test_perturb_a_painted_labels_region_matches_the_polygon(perturb_widget, viewer, box, in_box):
    w = perturb_widget
    a = w.session.adata
    _, bounds = box(viewer, 0)
    info = cell_layers(viewer)[0].metadata[K.CELLS_LAYER_META]
    dy, dx = info["offset"]
    x0, y0, x1, y1 = info["bounds"]
    # a labels layer covering section 0 at 1 unit per pixel, painted over the box
    shape = (int(y1 - y0) + 4, int(x1 - x0) + 4)
    paint = np.zeros(shape, dtype=np.int32)
    xa, ya, xb, yb = bounds
    paint[int(np.ceil(ya - y0)) + 2:int(np.floor(yb - y0)) + 2, int(np.ceil(xa - x0)) + 2:int(np.floor(xb - x0)) + 2] = 1
    viewer.add_labels(paint, name="painted", translate=(y0 + dy - 2, x0 + dx - 2))
    w.region.combo.setCurrentText("painted")
    inside = in_box(a, "section_0", (np.ceil(xa - x0) + x0 + 0.5, np.ceil(ya - y0) + y0 + 0.5,
                                      np.floor(xb - x0) + x0 - 1.5, np.floor(yb - y0) + y0 - 1.5))
    replace = a.obs.loc[inside, "cell_type"].value_counts().index[0]
    w.replace_combo.setCurrentText(replace)
    w.resp_combo.setCurrentIndex(1)
    w.run()
    assert w.last_error is None, w.last_error
    got = w.result.perturbed
    core = inside & (a.obs["cell_type"].astype(str).to_numpy() == replace)
    assert core.sum() > 0 and (got[core]).all()  # every cell well inside the painted area is perturbed
    assert (a.obs.loc[got, "section"] == "section_0").all()
    assert w.result.responders is not None


def test_perturb_without_a_region_says_so(perturb_widget):
    perturb_widget.run()
    assert "draw a polygon" in str(perturb_widget.last_error)


def test_counts_agree_and_the_colour_key_is_shown(perturb_widget, viewer, box, in_box):
    w = perturb_widget
    a = w.session.adata
    world, bounds = box(viewer, 0)
    w.region.new_layer().add_polygons([world])
    inside = in_box(a, "section_0", bounds)
    w.replace_combo.setCurrentText(a.obs.loc[inside, "cell_type"].value_counts().index[0])
    w.resp_combo.setCurrentIndex(0)  # every neighbour
    w.run()
    assert w.last_error is None, w.last_error
    res, p = w.result, w.result.params
    # every neighbour: the tabulated cells are the affected cells (was "x of 0 changed", "(n=0)")
    assert res.n_responders == p["n_affected"] > 0
    assert res.n_changed_responders == p["n_changed_responders"] == p["n_changed"]
    title = w.transitions_panel.figure.axes[0].get_title()
    assert f"of {p['n_affected']} responders changed" in title or "no responder changed" in title
    text = w.summary_label.text()
    assert f"{p['n_affected']:,} cells could change" in text and f"{p['n_changed']:,} did" in text
    assert "((" not in text
    # a visible colour key, whose counts add up to the slide
    assert w.key_panel.has_content() and w.key_panel.isVisibleTo(w)
    assert sum(w.key.counts) == a.n_obs and w.key.counts[0] == p["n_perturbed"]
    assert w.session.legend is w.key and "perturbation" in viewer.text_overlay.text


def test_the_region_is_never_chosen_silently(perturb_widget, viewer):
    w = perturb_widget
    viewer.add_shapes(name="impute regions")
    assert w.region.layer() is None  # an existing Shapes layer is offered, not taken
    w.run()
    assert "no region layer chosen" in str(w.last_error)
    w.region.choose(viewer.layers["impute regions"])
    assert w.region.layer() is viewer.layers["impute regions"]


def test_missing_slide_message_goes_when_a_slide_opens(make_napari_viewer, tissue):
    viewer = make_napari_viewer()
    w = PerturbWidget(viewer)
    w.run()
    assert w.status.text().count("no slide") == 1
    w.session.set_slide(tissue, source={"format": "synthetic"})
    assert w.status.text() == "" and w.last_error is None
