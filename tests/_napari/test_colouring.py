"""Colouring cells by a token, a score, any obs column or a gene; legends; hover features; export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_squint import _constants as K
from napari_squint._napari.colouring import GENE, TOKEN, colour_by, colour_choices, gene_values, hover_features
from napari_squint._napari.session import Session


@pytest.fixture
def session(tissue):
    s = Session()
    s.set_slide(tissue, source={"format": "synthetic"})
    return s


def test_choices_list_obs_columns_and_gene(session):
    ch = colour_choices(session.adata)
    assert {"cell_type", "neighbour_fraction", "section"} <= set(ch)
    assert ch[-1] == GENE and TOKEN not in ch  # no tokens yet
    session.adata.obs[K.TOKEN_KEY] = pd.Categorical(np.arange(session.adata.n_obs) % 3)
    assert colour_choices(session.adata)[0] == TOKEN


def test_categorical_column_gets_a_legend_with_counts(session):
    rgba, legend, values = colour_by(session, "cell_type")
    ct = session.adata.obs["cell_type"].astype(str)
    assert legend.categorical and sum(legend.counts) == session.adata.n_obs
    assert legend.labels[0] == ct.value_counts().index[0]  # most frequent first
    first = ct.to_numpy() == legend.labels[0]
    assert np.allclose(rgba[first], legend.colours[0])
    assert list(legend.table().columns) == ["category", "cells", "colour"]
    assert (values == ct.to_numpy()).all()


def test_numeric_column_gets_a_colour_bar(session):
    rgba, legend, values = colour_by(session, "neighbour_fraction")
    col = session.adata.obs["neighbour_fraction"].to_numpy(dtype=float)
    assert not legend.categorical and legend.limits == pytest.approx((col.min(), col.max()))
    assert not np.allclose(rgba[np.argmin(col)], rgba[np.argmax(col)])
    assert "neighbour_fraction" in legend.caption()


def test_gene_is_measured_outside_and_imputed_inside(session):
    a = session.adata
    gene = str(a.var_names[3])
    measured, flag = gene_values(a, gene)
    assert not flag.any()
    from napari_squint.metrics import log_normalise

    full = log_normalise(a.X)[:, int(a.var_names.get_loc(gene))]
    full = np.asarray(full.toarray() if hasattr(full, "toarray") else full).ravel()
    assert np.allclose(measured, full, atol=1e-5)  # one column, scaled like the whole matrix
    inside = np.arange(a.n_obs) < 10
    out = a[inside].copy()
    out.obs[K.CREATED_KEY] = False
    out.layers[K.IMPUTED_LAYER] = np.full(out.shape, 5.0, dtype=np.float32)  # flat profile: every gene equal
    session.results["impute"] = out
    values, flag = gene_values(a, gene, imputed=out)
    assert (flag == inside).all()
    assert np.allclose(values[~inside], measured[~inside])
    assert np.allclose(values[inside], np.log1p(1e4 / a.n_vars))
    rgba, legend, _ = colour_by(session, GENE, gene=gene)
    assert "10 imputed (in polygons)" in legend.caption()
    assert legend.limits[0] == 0.0 and legend.limits[1] == pytest.approx(values.max())


def test_unknown_gene_names_it(session):
    with pytest.raises(KeyError, match="NotAGene"):
        colour_by(session, GENE, gene="NotAGene")


def test_hover_features_name_the_cell(session):
    cells = np.arange(5)
    _, legend, values = colour_by(session, "cell_type")
    f = hover_features(session, cells, value_name=legend.title, values=values)
    assert list(f.columns[:2]) == ["cell", "section"] and "cell type" in f.columns
    assert (f["cell_type"] == session.adata.obs["cell_type"].astype(str).to_numpy()[:5]).all()


def test_panel_colours_the_canvas_with_legend_caption_and_hover(slide_widget, tmp_path):
    from napari_squint._napari.layers import cell_layers

    w = slide_widget
    w.colour_panel.colour("cell_type")
    s = w.session
    assert s.legend.title == "cell_type" and s.legend.categorical
    assert "cell_type" in w.viewer.text_overlay.text and w.viewer.text_overlay.visible
    layer = cell_layers(w.viewer)[0]
    assert "cell_type" in layer.features.columns
    gene = str(s.adata.var_names[0])
    w.colour_panel.colour(GENE, gene)
    assert s.legend.title == gene and gene in layer.features.columns
    assert w.colour_panel.legend_panel.has_content()
    # exports: figure and table, atomic, and never over a file the tool did not write
    png = w.colour_panel.legend_panel.save_figure(tmp_path / "legend.png", w)
    assert png.stat().st_size > 0
    csv = w.colour_panel.legend_panel.save_table(tmp_path / "legend.csv", w)
    assert pd.read_csv(csv)["title"].iloc[0] == gene
    assert w.colour_panel.legend_panel.save_table(tmp_path / "legend.csv", w) == csv  # ours: replaced
    foreign = tmp_path / "notes.csv"
    foreign.write_text("mine")
    assert w.colour_panel.legend_panel.save_table(foreign, w) is None
    assert foreign.read_text() == "mine" and "not written by napari-squint" in str(w.last_error)


def test_sections_are_titled_on_the_canvas(slide_widget):
    titles = [lyr for lyr in slide_widget.viewer.layers if lyr.name == "section titles"]
    assert len(titles) == 1
    assert sorted(titles[0].features["section"]) == sorted(slide_widget.session.sections())


def test_one_at_a_time_titles_the_shown_section(slide_widget):
    w = slide_widget
    w.layout_combo.setCurrentText("one at a time")
    second = w.session.sections()[1]
    w.show_combo.setCurrentText(second)
    titles = [lyr for lyr in w.viewer.layers if lyr.name == "section titles"]
    assert len(titles) == 1 and list(titles[0].features["section"]) == [second]
