"""3D-stack report figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd

from napari_squint.plot.stack import plot_stack_report
from napari_squint.tasks.stack import StackReport, StackResult


def _report(graph, shift):
    idx = pd.Index([0.0, 50.0, 100.0], name="z")
    x = pd.DataFrame({"top 10": [0.5, 0.4, 0.3], "all 30": [0.2, 0.1, 0.0]}, index=idx) + shift
    return StackReport(x=x, x_nbr=x + 0.2, genes=pd.DataFrame(), per_gene_x=pd.DataFrame(),
                       per_gene_nbr=pd.DataFrame(), n_heldout=pd.Series([5, 6, 7], index=idx), graph=graph,
                       graph_stats={}, tokens=np.zeros(3))


def test_heatmaps_one_row_per_level_shared_scale():
    import matplotlib.pyplot as plt

    res = StackResult(reports={"section": _report("section", 0.0), "3d": _report("3d", 0.05)}, heldout=np.zeros(3, bool),
                      levels=[0.0, 50.0, 100.0])
    fig = plot_stack_report(res)
    heat = [a for a in fig.axes if a.images]
    assert len(heat) == 4
    clims = {a.images[0].get_clim() for a in heat}
    assert len(clims) == 1  # one colour scale for every panel
    assert np.asarray(heat[0].images[0].get_array()).shape == (3, 2)
    assert "(n=5)" in heat[0].get_yticklabels()[0].get_text()
    plt.close(fig)
    fig = plot_stack_report(_report("section", 0.0))
    assert len([a for a in fig.axes if a.images]) == 2
    plt.close(fig)
