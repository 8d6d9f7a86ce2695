"""tasks.inpaint_eval: one in-painting request (prepared once, optional retraining, scored), without Qt."""

from __future__ import annotations

import numpy as np
import pytest

from napari_squint import _constants as K
from napari_squint.tasks.inpaint_eval import (
    METRICS,
    InpaintRequest,
    iter_inpaint,
    metrics_table,
    retrain_options,
    reuse_imputer,
    score,
)
from napari_squint.train.events import ProgressEvent, drive

TINY = {"epochs": 1, "codebook_size": 6, "heads": 2, "hidden": 32, "latent": 16, "device": "cpu", "batch_size": 256,
        "num_threads": 1}


@pytest.fixture(scope="module")
def slide_and_model():
    from napari_squint.api.squint import Squint
    from napari_squint.data.synthetic import make_tissue

    a = make_tissue(n_cells=700, n_genes=40, n_sections=2, seed=1)
    model = Squint(a, **TINY)
    model.train()
    return a, model


def _patch(a, n=40):
    xy = np.asarray(a.obsm["spatial"])
    first = a.obs["section"].astype(str).to_numpy() == a.obs["section"].astype(str).iloc[0]
    centre = xy[first].mean(0)
    d = np.where(first, ((xy - centre) ** 2).sum(1), np.inf)
    mask = np.zeros(a.n_obs, bool)
    mask[np.argsort(d)[:n]] = True
    return mask


def test_request_imputes_scores_and_reports_stages(slide_and_model):
    a, model = slide_and_model
    mask = _patch(a)
    events = []
    run, cancelled = drive(iter_inpaint(model, a, InpaintRequest(mask=mask, fill_empty=False)),
                           callback=events.append)
    assert not cancelled
    assert set(run.output.obs_names) == set(a.obs_names[mask])
    assert set(run.metrics) == {"SQuINT", "neighbourhood average"}
    assert set(run.metrics["SQuINT"]) >= set(METRICS)
    assert {"prepare", "impute", "score"} <= set(run.seconds)
    assert all(isinstance(e, ProgressEvent) for e in events)
    table = metrics_table(run.metrics)
    assert list(table.columns) == ["method", *METRICS] and len(table) == 2


def test_the_prepared_slide_is_reused_for_the_same_model_and_slide(slide_and_model):
    a, model = slide_and_model
    mask = _patch(a, 20)
    first, _ = drive(iter_inpaint(model, a, InpaintRequest(mask=mask, fill_empty=False, score=False)))
    second, _ = drive(iter_inpaint(model, a, InpaintRequest(mask=mask, fill_empty=False, score=False),
                                   imputer=first.imputer))
    assert second.imputer is first.imputer and "prepare" not in second.seconds
    assert np.allclose(first.output.layers[K.IMPUTED_LAYER], second.output.layers[K.IMPUTED_LAYER])
    assert reuse_imputer(first.imputer, model, a.copy()) is None  # another slide: prepared anew


def test_holdout_retrains_without_the_cells(slide_and_model):
    a, model = slide_and_model
    mask = _patch(a, 30)
    req = InpaintRequest(mask=mask, fill_empty=False, holdout=True, epochs=1, train_options=dict(TINY),
                         score=False)
    run, _ = drive(iter_inpaint(model, a, req))
    assert run.model is not model and run.holdout
    assert not set(run.model.data.obs_names) & set(a.obs_names[mask])
    assert run.model.history and len(run.model.history) == 1
    assert "retrain" in run.seconds


def test_retrain_options_keep_only_the_models_own():
    from napari_squint.api.cifm import Cifm
    from napari_squint.api.squint import Squint

    opts = {"epochs": 5, "codebook_size": 8, "num_threads": 1}
    assert retrain_options(Squint.__new__(Squint), opts) == {"codebook_size": 8, "num_threads": 1}
    assert "codebook_size" not in retrain_options(Cifm.__new__(Cifm), opts)


def test_score_needs_measured_cells(slide_and_model):
    a, _ = slide_and_model
    out = a[:2].copy()
    out.obs[K.CREATED_KEY] = False
    out.layers[K.IMPUTED_LAYER] = np.asarray(out.X.todense() if hasattr(out.X, "todense") else out.X)
    assert score(a, out, genes=list(a.var_names), layer=None, section_key="section", spatial_key="spatial") == {}
