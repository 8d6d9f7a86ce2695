"""The masked-code head is fitted after training as a probe: the encoder stays as trained, the head learns."""

from __future__ import annotations

import copy

import numpy as np
import torch

from napari_squint.train.code_head import iter_fit_code_head, observed_codes
from napari_squint.train.events import drive


def test_fit_learns_the_observed_codes_and_leaves_the_encoder_alone(trained_tiny):
    model = copy.deepcopy(trained_tiny)
    module, data = model.module, model.data
    cells = np.arange(data.n_cells)
    before = {k: v.clone() for k, v in module.state_dict().items() if not k.startswith(("code_head.", "token_"))}
    torch.nn.init.zeros_(module.code_head[-1].weight)  # a fresh head: uniform predictions
    torch.nn.init.zeros_(module.code_head[-1].bias)
    cfg = copy.deepcopy(model.config.train)
    cfg.code_head_epochs = 6
    record, cancelled = drive(iter_fit_code_head(module, data, cells, cfg, model.device))
    assert not cancelled
    k = model.config.model.codebook_size
    assert record["code_head_ce"] < np.log(k)  # better than the uniform guess it started from
    assert record["code_head_accuracy"] > 1.5 / k
    after = module.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)  # encoder, codebook, decoders untouched
    codes = observed_codes(module, data, cells, model.device)
    uniq, counts = np.unique(codes, axis=0, return_counts=True)
    np.testing.assert_array_equal(module.token_codes.cpu().numpy(), uniq)
    np.testing.assert_array_equal(module.token_counts.cpu().numpy(), counts)


def test_no_head_still_records_the_tokens(trained_tiny):
    model = copy.deepcopy(trained_tiny)
    model.module.code_head = None
    model.module.token_codes = torch.zeros(0, model.config.model.heads, dtype=torch.long)
    record, _ = drive(model.iter_fit_code_head())
    assert record is None and model.module.token_codes.shape[0] > 0 and not model.has_code_head


def test_disc_mask_makes_contiguous_holes_and_context_reads_observed_cells(trained_tiny):
    from scipy.spatial import cKDTree

    from napari_squint.train.code_head import disc_mask, with_observed_context

    data = trained_tiny.data
    cells = np.arange(data.n_cells)
    rng = np.random.default_rng(0)
    masked = disc_mask(data, cells, rng, fraction=0.2, sizes=(30, 60))
    assert 0.2 <= masked.mean() < 0.2 + 60 / data.n_cells + 1e-9
    # holes are contiguous: most masked cells have a masked cell among their graph neighbours
    nb = data.nbr[masked]
    assert ((nb >= 0) & masked[np.maximum(nb, 0)]).any(1).mean() > 0.9
    ctx = with_observed_context(data, masked, k=4)
    assert np.array_equal(ctx.nbr[~masked], data.nbr[~masked]) and ctx.nbr is not data.nbr
    rows = np.flatnonzero(masked)
    got = ctx.nbr[rows]
    assert (got[:, :4] >= 0).all() and (got[:, 4:] == -1).all()
    assert not masked[got[:, :4]].any()  # only observed cells are read
    same = data.batch[got[:, :4]] == data.batch[rows][:, None]
    assert same.all()  # and only from the cell's own section
    b = data.batch[rows[0]]
    pool = np.flatnonzero(~masked & (data.batch == b))
    _, nn = cKDTree(data.coords[pool]).query(data.coords[rows[0]], k=4)
    assert set(pool[nn]) == set(got[0, :4])  # the nearest ones
