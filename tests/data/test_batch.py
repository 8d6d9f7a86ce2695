"""Training batches: the per-epoch plan gathers exactly what make_batch builds one batch at a time."""

import numpy as np
import pytest
import torch

from napari_squint.data.batch import EpochBatches, SlideTensors, epoch_batches, make_batch, plan_epoch


@pytest.fixture(scope="module")
def prepared(tissue):
    from napari_squint.api.squint import Squint

    return Squint(tissue, epochs=1, batch_size=256).data


@pytest.mark.parametrize("budget", [None, 0], ids=["dense", "csr"])
def test_epoch_plan_matches_make_batch(prepared, budget):
    d = prepared
    rng = np.random.default_rng(0)
    masked = rng.random(d.n_cells) < 0.3
    batches = list(epoch_batches(d, np.arange(d.n_cells), 256, rng))
    bids = [d.batch[s].copy() for s in batches]
    bids[0][:5] = 99  # overridden section ids travel with the plan
    negs = [int(rng.integers(2**31)) for _ in batches]
    eb = EpochBatches(plan_epoch(d, batches, masked=masked, batch_ids=bids, neg_seeds=negs),
                      SlideTensors(d, budget=budget))
    assert len(eb) == len(batches) > 3
    assert (budget == 0) == (not eb.tensors.dense)
    for i, seeds in enumerate(batches):
        want = make_batch(d, seeds, masked=masked, rng=np.random.default_rng(negs[i]), batch_id=bids[i])
        got = eb[i]
        for name in want.__dataclass_fields__:
            if name.startswith("lfact"):  # training batches only: checked below
                continue
            a, b = getattr(want, name), getattr(got, name)
            if isinstance(a, torch.Tensor):
                assert a.dtype == b.dtype and torch.equal(a, b), name
            else:
                np.testing.assert_array_equal(a, b, err_msg=name)
        from scipy.special import gammaln

        for lf, x in ((got.lfact_nbr, want.x_nbr), (got.lfact_cell, want.x_cell)):
            np.testing.assert_allclose(lf.numpy(), gammaln(x.double().numpy() + 1).sum(1), rtol=1e-9)


def test_plan_of_a_subset_of_cells(prepared):
    """Shards (distributed ranks) plan only their own cells; halos still reach every neighbour."""
    d = prepared
    cells = np.flatnonzero(d.tile % 2 == 0)
    rng = np.random.default_rng(1)
    batches = list(epoch_batches(d, cells, 128, rng))
    plan = plan_epoch(d, batches, masked=None, batch_ids=[d.batch[s] for s in batches], neg_seeds=[0] * len(batches))
    assert np.array_equal(np.sort(plan.seeds), cells)
    assert not plan.node_masked.any()
    for i, seeds in enumerate(batches):
        nodes = plan.nodes[plan.u_off[i]:plan.u_off[i + 1]]
        nb = d.nbr[seeds]
        assert np.array_equal(nodes, np.unique(np.concatenate([seeds, nb[nb >= 0]])))
