"""Cell-level perturbation: tokens before / after, transitions, locality, reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from napari_squint import _constants as K
from napari_squint.tasks.perturb import perturb, prototype_profile, select_cells, transition_tables


@pytest.fixture(scope="module")
def setup(tissue):
    """The session's tiny tissue, a model trained on it for 10 epochs (seeded; the 3-epoch session model has barely
    left the mean profile), and masks of T cells (to perturb) and macrophages (responders)."""
    from napari_squint.api.squint import Squint

    model = Squint(tissue, epochs=10, batch_size=256, codebook_size=8, heads=2, latent=16, hidden=32, seed=0,
                   device="cpu")
    model.train()
    ad = tissue.copy()
    ct = ad.obs["cell_type"].astype(str).to_numpy()
    first = (ad.obs["section"] == ad.obs["section"].cat.categories[0]).to_numpy()
    return ad, model, (ct == "T_cell") & first, ct == "Macrophage"


def test_identity_perturbation_changes_nothing(setup):
    ad, model, tcells, macs = setup
    own = ad[tcells].X.toarray()  # prototype = the cells' own profiles
    res = perturb(model, ad, cells=tcells, prototype=own, responders=macs)
    assert res.transitions.shape == (0, 0) and res.transition_proportions.empty
    assert res.changed.empty and res.n_changed_responders == 0
    np.testing.assert_array_equal(res.before, res.after)
    assert res.n_responders > 0
    np.testing.assert_allclose(res.token_proportions["before"], res.token_proportions["after"])


def test_strong_perturbation_moves_responders(setup):
    ad, model, tcells, macs = setup
    # a planted strong perturbation: T cells take the profile of the opposite extreme (tumour cells)
    tumour = (ad.obs["cell_type"] == "Tumour").to_numpy()
    res = perturb(model, ad, cells=tcells, prototype=tumour, responders=macs)
    assert res.n_changed_responders > 0.1 * res.n_responders
    t = res.transitions
    assert t.to_numpy().sum() == res.n_changed_responders
    assert all(t.at[i, i] == 0 for i in t.index if i in t.columns)  # diagonal excluded
    np.testing.assert_allclose(res.transition_proportions.sum(1), 1.0)
    tp = res.token_proportions
    np.testing.assert_allclose(tp["before"].sum(), 1.0)
    np.testing.assert_allclose(tp["after"].sum(), 1.0)
    assert not np.allclose(tp["before"], tp["after"])
    # responders are macrophages with a perturbed neighbour, never perturbed themselves
    nbr = model.prepare(ad).nbr
    has = np.where(nbr >= 0, tcells[np.maximum(nbr, 0)], False).any(1)
    np.testing.assert_array_equal(res.responders, macs & has & ~tcells)
    ch = res.changed
    assert (ch["before"] != ch["after"]).all() and set(ch["index"]) <= set(res.affected)


def test_only_perturbed_cells_and_their_neighbours_can_change(setup):
    ad, model, tcells, macs = setup
    tumour = (ad.obs["cell_type"] == "Tumour").to_numpy()
    res = perturb(model, ad, cells=tcells, prototype=tumour)
    data = model.prepare(ad)
    idx = np.flatnonzero(tcells)
    proto = prototype_profile(data, tumour, list(model.genes), idx.size)
    lib = data.library()[idx]
    new = data.replace_counts(idx, sp.csr_matrix(proto[None, :] / proto.sum() * lib[:, None]))
    full_before = model.encode(data)["tokens"]
    full_after = model.encode(new)["tokens"]
    moved = np.flatnonzero(full_before != full_after)
    assert moved.size > 0
    assert np.isin(moved, res.affected).all()  # nothing beyond the 1-hop neighbourhood changes
    assert set(moved) == set(res.affected[res.before != res.after])


def test_reproducible_with_seed_and_input_untouched(setup):
    ad, model, tcells, macs = setup
    X0 = ad.X.copy()
    obs0 = ad.obs.copy()
    tumour = (ad.obs["cell_type"] == "Tumour").to_numpy()
    a = perturb(model, ad, cells=tcells, prototype=tumour, responders=macs, sample=True, seed=3)
    b = perturb(model, ad, cells=tcells, prototype=tumour, responders=macs, sample=True, seed=3)
    np.testing.assert_array_equal(a.after, b.after)
    pd.testing.assert_frame_equal(a.transitions, b.transitions)
    assert (ad.X != X0).nnz == 0 and ad.obs.equals(obs0)
    # write=True, copy=True: obs columns on a copy
    c = perturb(model, ad, cells=tcells, prototype=tumour, responders=macs, write=True, copy=True)
    out = c.adata
    assert out is not ad and K.TOKEN_AFTER_KEY not in ad.obs
    assert out.obs[K.PERTURBED_KEY].sum() == tcells.sum()
    tb = out.obs[K.TOKEN_BEFORE_KEY].to_numpy().astype(int)
    ta = out.obs[K.TOKEN_AFTER_KEY].to_numpy().astype(int)
    assert set(np.flatnonzero(tb != ta)) == set(c.changed["index"])
    assert out.uns["squint"]["perturb"]["params"]["n_perturbed"] == int(tcells.sum())


def test_scale_options_and_errors(setup):
    ad, model, tcells, macs = setup
    tumour = (ad.obs["cell_type"] == "Tumour").to_numpy()
    data = model.prepare(ad)
    vec = prototype_profile(data, tumour, list(model.genes), int(tcells.sum()))
    # tokens see log-normalised inputs: scaling the prototype does not change them
    r1 = perturb(model, ad, cells=tcells, prototype=vec, scale="none")
    r2 = perturb(model, ad, cells=tcells, prototype=vec * 7.0, scale="library")
    np.testing.assert_array_equal(r1.after, r2.after)
    series = pd.Series(vec, index=model.genes)
    r3 = perturb(model, ad, cells=tcells, prototype=series)
    np.testing.assert_array_equal(r3.after, r2.after)
    with pytest.raises(ValueError, match="scale"):
        perturb(model, ad, cells=tcells, prototype=vec, scale="bogus")
    with pytest.raises(ValueError, match="no cell to perturb"):
        perturb(model, ad, cells=np.zeros(ad.n_obs, bool), prototype=vec)
    with pytest.raises(ValueError, match="rows"):
        perturb(model, ad, cells=tcells, prototype=np.ones((2, len(model.genes))))
    with pytest.raises(KeyError, match="not in adata.obs_names"):
        perturb(model, ad, cells=["no_such_cell"], prototype=vec)


def test_select_cells_region_and_type(setup, tmp_path):
    from shapely.geometry import box

    from napari_squint.io.geojson import Region, write_polygons

    ad, *_ = setup
    sec = str(ad.obs["section"].cat.categories[0])
    xy = np.asarray(ad.obsm["spatial"])
    on = (ad.obs["section"].astype(str) == sec).to_numpy()
    lo, hi = xy[on].min(0), xy[on].max(0)
    mid = (lo + hi) / 2
    path = write_polygons([Region(sec, box(lo[0], lo[1], mid[0], mid[1]), "roi")], tmp_path / "roi.geojson")
    mask = select_cells(ad, regions=path, cell_type="T_cell")
    inside = on & (xy[:, 0] <= mid[0]) & (xy[:, 1] <= mid[1])
    np.testing.assert_array_equal(mask, inside & (ad.obs["cell_type"] == "T_cell").to_numpy())
    with pytest.raises(ValueError, match="Unicorn"):
        select_cells(ad, cell_type="Unicorn")


def test_transition_tables_known_answer():
    before = np.array([1, 1, 1, 2, 2, 3])
    after = np.array([1, 4, 4, 5, 2, 3])
    t, p, tp = transition_tables(before, after)
    assert t.loc[1, 4] == 2 and t.loc[2, 5] == 1 and t.to_numpy().sum() == 3
    np.testing.assert_allclose(p.loc[1, 4], 1.0)
    assert tp.loc[1, "n_before"] == 3 and tp.loc[1, "n_after"] == 1 and tp.loc[4, "n_after"] == 2
