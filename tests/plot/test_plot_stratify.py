"""Stratification figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from napari_squint import _constants as K
from napari_squint.plot.stratify import plot_activation, plot_composition, plot_enrichment, plot_volcano


def test_activation_panels_and_fixed_scale(tissue):
    import matplotlib.pyplot as plt

    ad = tissue.copy()
    ad.obs[K.ACTIVATION_KEY] = np.linspace(0.2, 0.6, ad.n_obs).astype(np.float32)
    fig = plot_activation(ad, group_key="condition")
    panels = [a for a in fig.axes if a.collections and a.get_title()]
    assert len(panels) == ad.obs["section"].nunique()
    assert panels[0].collections[0].get_clim() == (0, 1)
    assert "condition" in panels[0].get_title()
    plt.close(fig)
    with pytest.raises(KeyError, match="stratify"):
        plot_activation(tissue)


def test_composition_volcano_enrichment():
    import matplotlib.pyplot as plt

    comp = pd.DataFrame({"n_low": [50, 10], "n_high": [5, 40], "frac_low": [0.8, 0.2], "frac_high": [0.1, 0.9],
                         "log2_ratio": [-3, 2], "pval": [1e-5, 1e-5], "qval": [1e-5, 1e-5]}, index=["A", "B"])
    fig = plot_composition(comp)
    widths = sorted(round(p.get_width(), 3) for p in fig.axes[0].patches)
    assert widths == [0.1, 0.2, 0.8, 0.9]
    plt.close(fig)
    de = pd.DataFrame({"gene": ["g1", "g2", "g3"], "logfoldchange": [2.0, -1.5, 0.1], "pval_adj": [1e-8, 1e-3, 0.9]})
    fig = plot_volcano(de)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert texts == {"g1", "g2"}  # only significant genes are labelled
    plt.close(fig)
    enr = pd.DataFrame({"frac_group": [0.5, 0.3, 0.2], "frac_other": [0.4, 0.4, 0.2], "rank_frequency": [1, 2, 3]},
                       index=[7, 3, 9])
    fig = plot_enrichment(enr, [3])
    assert any(t.get_text() == "3*" for t in fig.axes[0].get_xticklabels())
    plt.close(fig)
    with pytest.raises(ValueError):
        plot_volcano(de.iloc[:0])
