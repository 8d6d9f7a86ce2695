"""The Tokens dock: colour by token, legend, pick a token (list or click), top genes, dot plot."""

from __future__ import annotations

import numpy as np
import pytest

from napari_squint import _constants as K
from napari_squint._napari.colours import DIM, id_colours
from napari_squint._napari.hooks import pick_at
from napari_squint._napari.layers import cell_layers
from napari_squint._napari.tokens_widget import TOKEN_ROLE, TokensWidget


@pytest.fixture
def tokens_widget(trained, viewer):
    w = TokensWidget(viewer)
    viewer.window.add_dock_widget(w, name="Tokens")
    return w


def _colours_by_cell(viewer):
    """(n, 4) face colours gathered back into AnnData row order."""
    layers = cell_layers(viewer)
    n = sum(len(lyr.data) for lyr in layers)
    out = np.zeros((n, 4), dtype=np.float32)
    for lyr in layers:
        out[lyr.metadata[K.CELLS_LAYER_META]["cells"]] = lyr.face_color
    return out


def test_colour_by_token_uses_stable_colours_and_fills_the_legend(tokens_widget, viewer):
    w = tokens_widget
    adata = w.session.adata
    w.colour_by_token()
    got = _colours_by_cell(viewer)
    tok = adata.obs[K.TOKEN_KEY].to_numpy().astype(int)
    assert np.allclose(got, id_colours(tok), atol=1e-6)
    counts = adata.obs[K.TOKEN_KEY].value_counts()
    assert w.legend.count() == int((counts > 0).sum())
    # most used first, with its count in the label
    first = w.legend.item(0)
    assert first.data(TOKEN_ROLE) == counts.index[0]
    assert f"{counts.iloc[0]:,} cells" in first.text()


def test_selecting_a_token_highlights_its_cells_and_lists_top_genes(tokens_widget, viewer):
    w = tokens_widget
    adata = w.session.adata
    token = adata.obs[K.TOKEN_KEY].value_counts().index[1]
    w.select_token(token)
    assert w.last_error is None, w.last_error
    got = _colours_by_cell(viewer)
    mine = adata.obs[K.TOKEN_KEY].to_numpy() == token
    assert np.allclose(got[~mine], DIM)
    assert np.allclose(got[mine], id_colours(np.full(mine.sum(), int(token))))
    assert f"token {token}" in w.genes_label.text() and "top genes" in w.genes_label.text()
    assert w.summary is not None and len(w.summary.markers)
    w.clear_selection()
    assert not np.allclose(_colours_by_cell(viewer)[~mine], DIM)


def test_clicking_a_cell_selects_its_token(tokens_widget, viewer):
    w = tokens_widget
    adata = w.session.adata
    layer = cell_layers(viewer)[1]
    i = 17
    cell = layer.metadata[K.CELLS_LAYER_META]["cells"][i]
    world = np.asarray(layer.data[i]) + np.asarray(layer.translate)
    assert pick_at(w.session, viewer, world) == cell
    assert w.selected_token == adata.obs[K.TOKEN_KEY].iloc[cell]
    assert w.legend.currentItem().data(TOKEN_ROLE) == w.selected_token
    # far from any cell: nothing is picked
    assert pick_at(w.session, viewer, world + 1e6) is None


def test_dot_plot_of_a_programme(tokens_widget):
    w = tokens_widget
    genes = list(w.session.adata.var_names[:4])
    w.programme_edit.setText(", ".join(genes))
    w.n_tokens_spin.setValue(5)
    w.dot_plot()
    assert w.last_error is None, w.last_error
    ax = w.dotplot.figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == genes
    n_tok = min(5, w.session.adata.obs[K.TOKEN_KEY].nunique())
    assert len(ax.get_yticklabels()) == n_tok
    assert len(ax.collections[0].get_offsets()) == 4 * n_tok


def test_dot_plot_unknown_gene_is_reported(tokens_widget):
    tokens_widget.programme_edit.setText("NotAGene")
    tokens_widget.dot_plot()
    assert isinstance(tokens_widget.last_error, KeyError) and "NotAGene" in str(tokens_widget.last_error)


def test_assign_tokens_from_the_widget(viewer, slide_widget, tiny_model):
    w = TokensWidget(viewer)
    s = w.session
    s.set_model(tiny_model)
    assert not s.has_tokens and w.legend.count() == 0
    w.assign_tokens()
    assert w.last_error is None, w.last_error
    assert s.has_tokens and w.legend.count() > 1
    assert s.colours is not None and s.colours.shape == (900, 4)


def test_token_colours_are_stable_across_calls():
    a = id_colours(np.array([0, 5, 17, 1023]))
    b = id_colours(np.array([1023, 17, 5, 0]))[::-1]
    assert np.allclose(a, b)
    # neighbouring ids are told apart
    c = id_colours(np.arange(64))
    d = np.linalg.norm(c[1:, :3] - c[:-1, :3], axis=1)
    assert d.min() > 0.15


def test_dot_plot_ranks_tokens_by_programme_expression(tokens_widget, monkeypatch):
    import napari_squint._napari.tokens_widget as tw

    monkeypatch.setattr(tw, "MIN_CELLS_RANKED", 5)
    w = tokens_widget
    genes = list(w.session.adata.var_names[:3])
    w.programme_edit.setText(" ".join(genes))
    w.n_tokens_spin.setValue(4)
    w.rank_combo.setCurrentText("highest programme expression")
    w.dot_plot()
    assert w.last_error is None, w.last_error
    from napari_squint.tasks.explain import programme_table

    table = programme_table(w.session.adata, genes, min_cells=5, copy=True)
    best = table.groupby("token")["mean"].mean().sort_values(ascending=False).index[:4]
    shown = [t.get_text() for t in w.dotplot.figure.axes[0].get_yticklabels()]
    assert [label.split(" (n=")[0] for label in shown] == [str(t) for t in best]


def test_a_mouse_click_on_the_canvas_picks_the_cell(tokens_widget, viewer):
    """Through napari's own mouse-callback machinery: press then release without moving selects the token."""
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    w = tokens_widget
    layer = cell_layers(viewer)[0]
    viewer.layers.selection.active = layer  # pan/zoom mode
    i = 3
    world = tuple(np.asarray(layer.data[i]) + np.asarray(layer.translate))
    cell = layer.metadata[K.CELLS_LAYER_META]["cells"][i]
    mouse_press_callbacks(viewer, read_only_mouse_event(type="mouse_press", position=world))
    mouse_release_callbacks(viewer, read_only_mouse_event(type="mouse_release", position=world))
    assert w.session.picked == cell
    assert w.selected_token == w.session.adata.obs[K.TOKEN_KEY].iloc[cell]
    # a drag (pan) picks nothing
    w.clear_selection()
    w.session.picked = None
    mouse_press_callbacks(viewer, read_only_mouse_event(type="mouse_press", position=world))
    from napari.utils.interactions import mouse_move_callbacks

    moved = (world[0] + 50, world[1] + 50)
    mouse_move_callbacks(viewer, read_only_mouse_event(type="mouse_move", is_dragging=True, position=moved))
    mouse_release_callbacks(viewer, read_only_mouse_event(type="mouse_release", position=moved))
    assert w.session.picked is None


def test_overview_lists_every_token_and_selects_on_click(tokens_widget, tmp_path):
    pytest.importorskip("napari_squint.tasks.explain")
    w = tokens_widget
    w.describe_tokens()
    assert w.last_error is None, w.last_error
    counts = w.session.adata.obs[K.TOKEN_KEY].value_counts()
    n = int((counts > 0).sum())
    assert w.overview.rowCount() == n
    assert w.overview.item(0, 1).text().startswith(f"{counts.iloc[0]:,} ")  # the most used token first
    assert "%" in w.overview.item(0, 2).text()  # top cell types with their shares
    tok = w.overview.item(2, 0).data(TOKEN_ROLE)
    w._overview_clicked(2)
    assert w.selected_token == tok
    out = w.save_overview(tmp_path / "tokens.csv")
    import pandas as pd

    assert len(pd.read_csv(out)) == n


def test_clicking_a_cell_brings_the_tokens_tab_forward(make_napari_viewer, tissue, tiny_model):
    from qtpy.QtWidgets import QApplication, QTabBar

    from napari_squint._napari.hooks import main_window_of

    viewer = make_napari_viewer()
    docks = {}
    for name in ("Slide & model", "Tokens", "Perturb"):
        docks[name] = viewer.window.add_plugin_dock_widget("napari-squint", name)[1]
        QApplication.processEvents()
    slide = docks["Slide & model"]
    s = slide.session
    s.set_slide(tissue, source={"format": "synthetic"})
    slide.show_cells()
    s.set_model(tiny_model)
    tiny_model.tokens(s.adata)
    s.mark_changed("tokens")
    docks["Perturb"].bring_forward()
    bar = next(b for b in main_window_of(slide).findChildren(QTabBar) if b.count() == 3)
    assert bar.tabText(bar.currentIndex()).startswith("Perturb")
    s.picked = 5
    s.notify("pick")
    QApplication.processEvents()
    assert bar.tabText(bar.currentIndex()).startswith("Tokens")
    assert docks["Tokens"].selected_token == s.adata.obs[K.TOKEN_KEY].iloc[5]
    s.dirty = False
