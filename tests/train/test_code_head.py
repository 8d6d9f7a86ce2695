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


def test_code_shares_on_a_known_case():
    from napari_squint.train.code_head import code_shares

    codes = np.array([[0, 1], [0, 2], [1, 2], [-1, -1], [2, 0]])  # 5 cells, 2 heads, K = 3; cell 3 has no code
    usable = np.array([True, True, True, True, False])  # cell 4 is masked
    nbr = np.array([[0, 1, 2, -1], [3, 4, -1, -1], [0, 0, 4, 3]])
    out = code_shares(nbr, codes, usable, 3).reshape(3, 2, 3)
    # row 0 reads cells 0, 1, 2: head 0 codes (0, 0, 1), head 1 codes (1, 2, 2)
    np.testing.assert_allclose(out[0], [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    np.testing.assert_allclose(out[1], 0.0)  # only an uncoded and a masked neighbour: nothing to read
    np.testing.assert_allclose(out[2], [[1, 0, 0], [0, 1, 0]])  # cell 0 twice; the masked cell is skipped
    np.testing.assert_allclose(out.sum(-1)[[0, 2]], 1.0)


def _with_context_head(trained_tiny):
    from napari_squint.nn.mlp import mlp

    model = copy.deepcopy(trained_tiny)
    cfg = model.config.model
    cfg.code_head_context = True
    torch.manual_seed(0)
    model.module.code_head = mlp([cfg.latent + cfg.heads * cfg.codebook_size, cfg.hidden,
                                  cfg.heads * cfg.codebook_size]).to(model.device)
    return model


def test_context_head_learns_and_reads_its_neighbours_codes(trained_tiny):
    model = _with_context_head(trained_tiny)
    cfg = copy.deepcopy(model.config.train)
    cfg.code_head_epochs = 6
    record, _ = drive(iter_fit_code_head(model.module, model.data, np.arange(model.data.n_cells), cfg,
                                         model.device))
    k = model.config.model.codebook_size
    assert record["code_head_ce"] < np.log(k) and record["code_head_accuracy"] > 1.5 / k
    data = model.data
    masked = np.zeros(data.n_cells, dtype=bool)
    masked[:40] = True
    cells = np.arange(40)
    computed = model.code_mixture(data, masked, cells, top=3)  # neighbours' codes encoded here
    codes = model._neighbour_codes(data, masked, cells)
    assert (codes[masked] == -1).all()  # a masked neighbour's code is never read
    given = model.code_mixture(data, masked, cells, top=3, context_codes=codes)
    np.testing.assert_array_equal(computed["candidates"], given["candidates"])
    none = model.code_mixture(data, masked, cells, top=3, context_codes=np.full_like(codes, -1))
    assert not np.allclose(none["weights"], given["weights"])  # the head reads the neighbours' codes
