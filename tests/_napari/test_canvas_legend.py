"""The legend on the canvas: names and counts or a colour bar, top right, hidden without colours, mouse-transparent."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_squint._napari.canvas_legend import (
    MARGIN,
    MAX_ITEMS,
    CanvasLegend,
    canvas_legend,
    canvas_widget,
    legend_image,
)
from napari_squint._napari.colouring import GENE, GENE_UNIT, colour_by
from napari_squint._napari.hooks import main_window_of


def _has_colour(img: np.ndarray, rgba, tol: int = 2) -> bool:
    """Some opaque pixel of ``img`` (h, w, 4 uint8) has the colour ``rgba`` (floats in [0, 1])."""
    want = np.round(np.asarray(rgba)[:3] * 255).astype(int)
    px = img[img[..., 3] == 255][:, :3].astype(int)
    return bool((np.abs(px - want).max(axis=1) <= tol).any())


def _label(widget) -> CanvasLegend:
    QApplication.processEvents()
    label = canvas_legend(main_window_of(widget))
    assert label is not None
    return label


def _anchored_top_right(label) -> bool:
    canvas = label.parentWidget()
    return label.y() == MARGIN and abs(label.x() + label.width() + MARGIN - canvas.width()) <= 1


def test_categorical_colouring_lists_names_and_counts_on_the_canvas(slide_widget):
    w = slide_widget
    w.colour_panel.colour("cell_type")
    label = _label(w)
    legend = w.session.legend
    assert label.parentWidget() is canvas_widget(main_window_of(w))
    assert not label.isHidden() and not label.pixmap().isNull()
    text = label.accessibleDescription()
    assert text.splitlines()[0] == "cell_type"
    for name, count in zip(legend.labels, legend.counts):  # every category with its number of cells
        assert f"{name} ({count:,})" in text
    img = legend_image(legend)
    for colour in legend.colours[:MAX_ITEMS]:  # a swatch of each category's colour
        assert _has_colour(img, colour)
    assert _has_colour(img, (1.0, 1.0, 1.0))  # light text for the dark canvas
    window = main_window_of(w)
    window.resize(1400, 900)
    window.show()  # laid out: the canvas gets its size, and the legend follows
    QApplication.processEvents()
    assert _anchored_top_right(label)


def test_gene_colouring_shows_a_colour_bar_labelled_with_the_gene(slide_widget):
    w = slide_widget
    gene = str(w.session.adata.var_names[2])
    w.colour_panel.colour("cell_type")
    w.colour_panel.colour(GENE, gene)
    label = _label(w)
    lines = label.accessibleDescription().splitlines()
    lo, hi = w.session.legend.limits
    assert lines == [f"{gene} [{GENE_UNIT}]", f"min {lo:.3g}", f"max {hi:.3g}"]
    img = legend_image(w.session.legend)
    viridis = matplotlib.colormaps["viridis"]
    assert _has_colour(img, viridis(0.0), tol=4) and _has_colour(img, viridis(1.0), tol=4)
    assert not label.isHidden()


def test_a_new_slide_hides_the_legend_and_the_caption(slide_widget, tissue):
    w = slide_widget
    w.colour_panel.colour("cell_type")
    label = _label(w)
    assert not label.isHidden() and w.viewer.text_overlay.visible
    w.session.set_slide(tissue.copy(), source={"format": "synthetic"})  # nothing is coloured yet
    assert label.isHidden() and label.accessibleDescription() == ""
    assert not w.viewer.text_overlay.visible
    w.colour_panel.colour("cell_type")
    assert not label.isHidden()


def test_the_legend_lets_the_mouse_through_and_follows_the_canvas(slide_widget):
    w = slide_widget
    w.colour_panel.colour("cell_type")
    label = _label(w)
    canvas = label.parentWidget()
    assert label.testAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
    assert canvas.childAt(label.geometry().center()) is not label  # clicks and hover reach the canvas
    window = main_window_of(w)
    window.show()
    window.resize(1200, 800)
    QApplication.processEvents()
    before = canvas.width()
    window.resize(900, 700)
    QApplication.processEvents()
    assert canvas.width() != before and _anchored_top_right(label)


def test_plugins_route_puts_one_legend_on_the_canvas(make_napari_viewer, tissue):
    viewer = make_napari_viewer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, w = viewer.window.add_plugin_dock_widget("napari-squint", "Slide & model")
        viewer.window.add_plugin_dock_widget("napari-squint", "Tokens")
        QApplication.processEvents()
        w.session.set_slide(tissue, source={"format": "synthetic"})
        w.show_cells()
        w.colour_panel.colour("cell_type")
    assert not [x for x in caught if "Private attribute access" in str(x.message)]
    label = _label(w)
    canvas = label.parentWidget()
    assert [c for c in canvas.findChildren(CanvasLegend)] == [label]  # one per canvas, whatever docked it
    assert not label.isHidden() and "cell_type" in label.accessibleDescription()
    _, legend, _ = colour_by(w.session, "cell_type")
    assert label.legend.labels == legend.labels


def test_many_categories_are_cut_with_a_count_of_the_rest():
    from napari_squint._napari.colouring import Legend

    n = MAX_ITEMS + 6
    legend = Legend("cluster", labels=[f"c{i}" for i in range(n)], counts=list(range(n, 0, -1)),
                    colours=matplotlib.colormaps["tab20"](np.linspace(0, 1, n)))
    lines = legend.lines(max_items=MAX_ITEMS)
    assert lines[0] == "cluster" and lines[-1] == "… 6 more" and len(lines) == MAX_ITEMS + 2
    img = legend_image(legend)
    assert _has_colour(img, legend.colours[MAX_ITEMS - 1]) and not _has_colour(img, legend.colours[-1])
