"""The Activation score dock: condition + group -> top tokens, per-cell score coloured with a colour bar."""

from __future__ import annotations

import numpy as np
import pytest

from napari_squint import _constants as K
from napari_squint._napari.activation_widget import CMAP, ActivationWidget
from napari_squint._napari.colours import colour_continuous
from napari_squint._napari.layers import cell_layers


@pytest.fixture
def activation_widget(trained, viewer):
    w = ActivationWidget(viewer)
    viewer.window.add_dock_widget(w, name="Activation score")
    return w


def test_offers_condition_columns_and_their_groups(activation_widget):
    w = activation_widget
    cols = [w.condition_combo.itemText(i) for i in range(w.condition_combo.count())]
    assert "condition" in cols and "section" in cols and K.TOKEN_KEY not in cols
    assert w.condition_combo.currentText() == "condition"
    assert [w.group_combo.itemText(i) for i in range(w.group_combo.count())] == ["case", "control"]
    w.condition_combo.setCurrentText("sample")
    assert w.group_combo.count() == w.session.adata.obs["sample"].nunique()


def test_compute_colours_cells_by_score(activation_widget, viewer):
    w = activation_widget
    w.group_combo.setCurrentText("case")
    w.topk_spin.setValue(3)
    w.compute()
    assert w.last_error is None, w.last_error
    a = w.session.adata
    score = a.obs[K.ACTIVATION_KEY].to_numpy()
    assert score.shape == (900,) and score.min() >= 0 and score.max() <= 1
    assert len(w.result.top_tokens) == 3
    # the score follows the definition: a cell holding a top token with no such neighbour scores > 0
    top = set(w.result.top_tokens)
    holds = a.obs[K.TOKEN_KEY].isin(top).to_numpy()
    assert (score[holds] > 0).all()
    expected, _ = colour_continuous(score, cmap=CMAP, vmin=0, vmax=1)
    for layer in cell_layers(viewer):
        cells = layer.metadata[K.CELLS_LAYER_META]["cells"]
        assert np.allclose(layer.face_color, expected[cells], atol=1e-6)
    assert w.colourbar.figure.axes, "no colour bar"
    assert "top 3 tokens" in w.tokens_label.text()
    assert w.session.dirty and "stratify" in a.uns[K.UNS_KEY]


def test_enrichment_with_no_enriched_token_reports_it(activation_widget):
    w = activation_widget
    w.method_combo.setCurrentText("most enriched vs other groups")
    w.condition_combo.setCurrentText("section")
    w.group_combo.setCurrentIndex(0)
    w.compute()
    # either tokens were found, or the engine's message is shown; never a silent failure
    if w.last_error is not None:
        assert "enriched" in str(w.last_error)
    else:
        assert K.ACTIVATION_KEY in w.session.adata.obs


def test_activation_exports_its_colour_bar_and_top_tokens(activation_widget, tmp_path):
    import pandas as pd

    w = activation_widget
    w.condition_combo.setCurrentText("condition")
    w.compute()
    assert w.last_error is None, w.last_error
    assert w.colourbar.save_figure(tmp_path / "a.svg", w).read_text().lstrip().startswith("<?xml")
    table = pd.read_csv(w.colourbar.save_table(tmp_path / "a.csv", w))
    assert list(table["token"].astype(str)) == [str(t) for t in w.result.top_tokens]
