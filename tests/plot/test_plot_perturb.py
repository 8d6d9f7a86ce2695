"""Perturbation figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_squint.plot.perturb import plot_perturbation_map, plot_token_proportions, plot_transitions
from napari_squint.tasks.perturb import PerturbResult, transition_tables


def _result(before, after, n=10):
    t, p, tp = transition_tables(np.asarray(before), np.asarray(after))
    pert = np.zeros(n, bool)
    pert[:2] = True
    resp = np.zeros(n, bool)
    resp[2 : 2 + len(before)] = True
    idx = np.arange(2, 2 + len(before))
    moved = np.asarray(before) != np.asarray(after)
    changed = pd.DataFrame({"cell": [f"c{i}" for i in idx[moved]], "index": idx[moved],
                            "before": np.asarray(before)[moved], "after": np.asarray(after)[moved],
                            "perturbed": False, "responder": True})
    return PerturbResult(affected=idx, obs_names=pd.Index([f"c{i}" for i in idx]), before=np.asarray(before),
                         after=np.asarray(after), perturbed=pert, responders=resp, transitions=t,
                         transition_proportions=p, token_proportions=tp, changed=changed)


def test_transition_heatmap_values_and_empty_case():
    import matplotlib.pyplot as plt

    res = _result([1, 1, 1, 2], [4, 4, 5, 2])
    fig = plot_transitions(res)
    ax = fig.axes[0]
    img = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(img.sum(1), 1.0)  # row-normalised
    assert sorted(t.get_text() for t in ax.texts) == ["1", "2"]
    plt.close(fig)
    fig = plot_transitions(_result([1, 2], [1, 2]))
    assert "no responder changed" in fig.axes[0].texts[0].get_text()
    plt.close(fig)


def test_proportion_bars_and_map():
    import matplotlib.pyplot as plt

    res = _result([1, 1, 1, 2], [4, 4, 5, 2])
    fig = plot_token_proportions(res)
    h = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(sum(h), 2.0)  # before and after each sum to one
    plt.close(fig)
    ad = AnnData(obs=pd.DataFrame({"section": ["s"] * 10}, index=[f"c{i}" for i in range(10)]),
                 obsm={"spatial": np.random.default_rng(0).random((10, 2))})
    fig = plot_perturbation_map(ad, res)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert any("perturbed (n=2)" in s for s in labels) and any("new token (n=3)" in s for s in labels)
    plt.close(fig)
