"""Token figures: programme dot plot, co-occurrence clustermap, composition bars, marker heat map."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from napari_squint import _constants as K
from napari_squint.plot.tokens import (
    plot_cooccurrence,
    plot_programme_dotplot,
    plot_token_composition,
    plot_token_markers,
)
from napari_squint.tasks.explain import explain_tokens, programme_table, token_cooccurrence


@pytest.fixture(scope="module")
def typed(tissue):
    ad = tissue.copy()
    ad.obs[K.TOKEN_KEY] = pd.Categorical(ad.obs["cell_type"].cat.codes.to_numpy().astype(int))
    return ad


def test_dotplot_sizes_follow_fractions(typed):
    import matplotlib.pyplot as plt

    tab = programme_table(typed, list(typed.var_names[:5]))
    fig = plot_programme_dotplot(tab)
    ax = fig.axes[0]
    coll = ax.collections[0]
    np.testing.assert_allclose(coll.get_sizes(), tab["fraction"].to_numpy() * 220.0)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(typed.var_names[:5])
    plt.close(fig)
    with pytest.raises(ValueError, match="empty"):
        plot_programme_dotplot(tab.iloc[:0])


def test_cooccurrence_clustermap_has_dendrograms(typed, tmp_path):
    import matplotlib.pyplot as plt

    cooc = token_cooccurrence(typed, level_key="section", top_n=6)
    fig = plot_cooccurrence(cooc)
    heat = fig.axes[2]
    labels = [t.get_text() for t in heat.get_xticklabels()]
    assert labels == [str(t) for t in cooc.order]
    img = heat.images[0].get_array()
    np.testing.assert_allclose(np.asarray(img), cooc.correlation.loc[cooc.order, cooc.order].to_numpy())
    assert len(fig.axes[0].collections) > 0 and len(fig.axes[1].collections) > 0  # dendrogram lines
    fig.savefig(tmp_path / "c.png", dpi=60)
    plt.close(fig)


def test_composition_and_markers(typed):
    import matplotlib.pyplot as plt

    res = explain_tokens(typed, cell_type_key="cell_type", n_markers=3, copy=True)
    fig = plot_token_composition(res.cell_types, top=5)
    heights = np.array([p.get_height() for p in fig.axes[0].patches]).reshape(-1, 5)
    np.testing.assert_allclose(heights.sum(0), 1.0)  # stacked bars sum to one
    plt.close(fig)
    fig = plot_token_markers(res, top_tokens=5)
    assert fig.axes[0].images[0].get_array().shape[0] == 5
    plt.close(fig)
