"""CifmModule: masking/padding (eqs. 2-4), symmetries of the encoder, embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.utils import subgraph

from napari_squint.data.radius import median_nn_distance, radius_graph
from napari_squint.models.cifm import CifmModule, radius_edge_index
from napari_squint.models.cifm_loss import balanced_mse

TOL = dict(rtol=1e-9, atol=1e-10)
N_GENES = 6
RADIUS = 1.6


def make_model(seed=0, **kw) -> CifmModule:
    torch.manual_seed(seed)
    model = CifmModule(N_GENES, hidden=8, latent=4, **kw).double()
    for lay in (*model.encoder, *model.decoder):  # make coordinates move visibly
        torch.nn.init.normal_(lay.mlp_coord.last.weight, std=1.0)
    return model


def make_data(n=14, k=2, *, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_expr = torch.rand(n, N_GENES, generator=g, dtype=torch.float64) * 2
    x_expr[x_expr < 0.6] = 0.0
    x_expr[:, 0] += 0.1  # no cell is void
    coords = torch.rand(n, k, generator=g, dtype=torch.float64) * 4
    ei = torch.as_tensor(radius_graph(coords.numpy(), RADIUS))
    return x_expr, coords, ei


def rotation(k: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(k, k, generator=torch.Generator().manual_seed(k),
                                       dtype=torch.float64))
    return q


def test_structure_and_hparams():
    model = make_model(n_layers_enc=3, n_layers_dec=1)
    assert len(model.encoder) == 3 and len(model.decoder) == 1
    assert model.encoder[-1].out_channels == 4 and model.decoder[0].in_channels == 4
    assert model.input_proj.bias is None
    assert model.padding.shape == (4,) and model.padding.abs().sum() > 0
    assert model.hparams["n_genes"] == N_GENES
    assert "length_scale" in model.state_dict()
    assert "n_genes=6" in repr(model)


def test_encode_permutation_equivariance():
    model = make_model()
    x_expr, coords, ei = make_data()
    perm = torch.randperm(14, generator=torch.Generator().manual_seed(1))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(14)
    z = model.encode(x_expr, coords, ei)
    torch.testing.assert_close(model.encode(x_expr[perm], coords[perm], inv[ei]), z[perm], **TOL)
    out = model.decode(model.encode(x_expr, coords, ei), coords, ei)
    out_p = model.decode(model.encode(x_expr[perm], coords[perm], inv[ei]), coords[perm], inv[ei])
    torch.testing.assert_close(out_p, out[perm], **TOL)


@pytest.mark.parametrize("k", [2, 3])
def test_rotation_translation_invariance(k):
    model = make_model()
    x_expr, coords, ei = make_data(k=k)
    moved = coords @ rotation(k) + torch.arange(1.0, k + 1, dtype=torch.float64) * 100
    torch.testing.assert_close(model.encode(x_expr, moved, ei), model.encode(x_expr, coords, ei),
                               **TOL)
    mask = torch.zeros(14, dtype=torch.bool)
    mask[[2, 9]] = True
    torch.testing.assert_close(model.forward_masked(x_expr, moved, mask, ei),
                               model.forward_masked(x_expr, coords, mask, ei), **TOL)


def test_encoder_void_invariance():
    model = make_model()
    x_expr, coords, ei = make_data()
    z_ref = model.encode(x_expr, coords, ei)

    g = torch.Generator().manual_seed(7)
    n_void, n = 9, 14 + 9
    order = torch.randperm(n, generator=g)  # voids interleaved with real cells
    x_all = torch.cat([x_expr, torch.zeros(n_void, N_GENES, dtype=torch.float64)])[order]
    c_all = torch.cat([coords, torch.rand(n_void, 2, generator=g, dtype=torch.float64) * 4])[order]
    ei_all = torch.as_tensor(radius_graph(c_all.numpy(), RADIUS))
    pos = torch.empty(n, dtype=torch.long)
    pos[order] = torch.arange(n)
    real, void = pos[:14], pos[14:]
    is_void = torch.zeros(n, dtype=torch.bool)
    is_void[void] = True
    assert (is_void[ei_all[0]] & ~is_void[ei_all[1]]).any()  # voids touch real cells

    z_all = model.encode(x_all, c_all, ei_all)
    torch.testing.assert_close(z_all[real], z_ref, **TOL)
    assert torch.equal(z_all[void], torch.zeros_like(z_all[void]))


def test_forward_masked_returns_masked_rows_and_matches_manual_pipeline():
    model = make_model()
    x_expr, coords, ei = make_data()
    mask = torch.zeros(14, dtype=torch.bool)
    mask[[1, 5, 6, 12]] = True
    out = model.forward_masked(x_expr, coords, mask, ei)
    assert out.shape == (4, N_GENES) and (out >= 0).all()

    keep = ~mask
    sub, _ = subgraph(keep, ei, relabel_nodes=True, num_nodes=14)
    z_pad = model.pad(model.encode(x_expr[keep], coords[keep], sub), mask)
    assert torch.equal(z_pad[mask], model.padding.expand(4, -1))
    full = model.decode(z_pad, coords, ei)
    torch.testing.assert_close(out, full[mask], **TOL)
    # nn.Module call is the same
    torch.testing.assert_close(model(x_expr, coords, mask, ei), out, **TOL)


def test_encoder_graph_never_contains_masked_cells(monkeypatch):
    model = make_model()
    x_expr, coords, ei = make_data()
    mask = torch.zeros(14, dtype=torch.bool)
    mask[[0, 3, 4, 10]] = True
    seen = {}
    original = model.encode

    def spy(x, c, edge_index, **kw):
        seen.update(x=x, edge_index=edge_index)
        return original(x, c, edge_index, **kw)

    monkeypatch.setattr(model, "encode", spy)
    model.forward_masked(x_expr, coords, mask, ei)
    assert seen["x"].shape[0] == 10
    torch.testing.assert_close(seen["x"], x_expr[~mask], rtol=0, atol=0)
    assert seen["edge_index"].max() < 10
    # it is exactly the induced subgraph of the unmasked cells, re-indexed
    old = torch.nonzero(~mask).squeeze(1)
    got = {tuple(e) for e in old[seen["edge_index"]].T.tolist()}
    want = {tuple(e) for e in ei.T.tolist() if not mask[e[0]] and not mask[e[1]]}
    assert got == want and len(want) > 0


def test_masked_expression_does_not_leak():
    model = make_model()
    x_expr, coords, ei = make_data()
    mask = torch.zeros(14, dtype=torch.bool)
    mask[[2, 7, 11]] = True
    out = model.forward_masked(x_expr, coords, mask, ei)

    changed = x_expr.clone()
    changed[mask] = torch.rand(3, N_GENES, dtype=torch.float64) * 10
    torch.testing.assert_close(model.forward_masked(changed, coords, mask, ei), out, rtol=0, atol=0)

    # control: the output does depend on unmasked cells that neighbour masked ones
    nbr = ei[0][mask[ei[1]] & ~mask[ei[0]]]
    assert nbr.numel() > 0
    other = x_expr.clone()
    other[nbr] = other[nbr] * 3 + 1
    assert not torch.allclose(model.forward_masked(other, coords, mask, ei), out)


def test_forward_masked_with_radius_matches_edge_index():
    model = make_model()
    x_expr, coords, ei = make_data()
    mask = torch.zeros(14, dtype=torch.bool)
    mask[[2, 7, 11]] = True
    torch.testing.assert_close(model.forward_masked(x_expr, coords, mask, radius=RADIUS),
                               model.forward_masked(x_expr, coords, mask, ei), **TOL)
    with pytest.raises(ValueError, match="radius"):
        model.forward_masked(x_expr, coords, mask)


def test_loss_backpropagates_to_all_parts():
    model = make_model()
    x_expr, coords, ei = make_data()
    mask = torch.zeros(14, dtype=torch.bool)
    mask[[1, 8]] = True
    loss = balanced_mse(x_expr[mask], model.forward_masked(x_expr, coords, mask, ei))
    loss.backward()
    assert model.padding.grad is not None and model.padding.grad.abs().sum() > 0
    assert model.input_proj.weight.grad.abs().sum() > 0
    assert model.head.last.weight.grad.abs().sum() > 0


def test_embed_and_embed_cells():
    model = make_model()
    x_expr, coords, ei = make_data()
    torch.testing.assert_close(model.embed(x_expr, coords, ei), model.encode(x_expr, coords, ei),
                               **TOL)
    torch.testing.assert_close(model.embed(x_expr, coords, radius=RADIUS),
                               model.embed(x_expr, coords, ei), **TOL)

    cells = model.embed_cells(x_expr)
    assert cells.shape == (14, 4)
    # each row depends on that cell alone: same value alone or among others, any coords
    torch.testing.assert_close(model.embed_cells(x_expr[4:5], coords[4:5] * 9), cells[4:5], **TOL)
    other = x_expr.clone()
    other[5:] = 0.5
    torch.testing.assert_close(model.embed_cells(other)[:5], cells[:5], **TOL)
    # the microenvironment embedding does see neighbours
    assert not torch.allclose(model.embed(x_expr, coords, ei), cells)


def test_length_scale_makes_units_irrelevant():
    x_expr, coords, ei = make_data()
    a, b = make_model(), make_model()
    a.fit_length_scale(coords)
    assert float(a.length_scale) == pytest.approx(median_nn_distance(coords.numpy()))
    b.fit_length_scale(coords * 1000)  # e.g. nanometres instead of micrometres
    mask = torch.zeros(14, dtype=torch.bool)
    mask[[3, 4]] = True
    torch.testing.assert_close(b.forward_masked(x_expr, coords * 1000, mask, radius=RADIUS * 1000),
                               a.forward_masked(x_expr, coords, mask, radius=RADIUS), **TOL)
    # the buffer travels with the state dict
    c = make_model(seed=3)
    c.load_state_dict(b.state_dict())
    assert float(c.length_scale) == pytest.approx(float(b.length_scale))


def test_batched_graphs_match_separate_runs():
    model = make_model()
    x1, c1, e1 = make_data(seed=1)
    x2, c2, e2 = make_data(n=9, seed=2)
    c2 = c2 + 50.0  # far away, different centre
    x = torch.cat([x1, x2])
    c = torch.cat([c1, c2])
    ei = torch.cat([e1, e2 + 14], dim=1)
    batch = torch.cat([torch.zeros(14, dtype=torch.long), torch.ones(9, dtype=torch.long)])
    m1 = torch.zeros(14, dtype=torch.bool)
    m1[[0, 5]] = True
    m2 = torch.zeros(9, dtype=torch.bool)
    m2[[3]] = True
    out = model.forward_masked(x, c, torch.cat([m1, m2]), ei, batch=batch)
    ref = torch.cat([model.forward_masked(x1, c1, m1, e1), model.forward_masked(x2, c2, m2, e2)])
    torch.testing.assert_close(out, ref, **TOL)
    built = radius_edge_index(c, RADIUS, batch=batch)
    assert set(map(tuple, built.T.tolist())) == set(map(tuple, ei.T.tolist()))


def test_invalid_inputs():
    with pytest.raises(ValueError, match="n_genes"):
        CifmModule(0)
    with pytest.raises(ValueError, match="n_layers_enc"):
        CifmModule(5, n_layers_enc=0)
    with pytest.raises(ValueError, match="length_scale"):
        CifmModule(5, length_scale=-1.0)
    model = make_model()
    x_expr, coords, ei = make_data()
    with pytest.raises(ValueError, match="x_expr"):
        model.encode(x_expr[:, :3], coords, ei)
    with pytest.raises(ValueError, match="coords"):
        model.encode(x_expr, coords[:5], ei)
    with pytest.raises(ValueError, match="mask"):
        model.forward_masked(x_expr, coords, torch.zeros(14, dtype=torch.long), ei)
    with pytest.raises(ValueError, match="z_pad"):
        model.decode(torch.zeros(14, 3, dtype=torch.float64), coords, ei)


def test_float32_default_runs():
    torch.manual_seed(0)
    model = CifmModule(N_GENES, hidden=8, latent=4)
    x_expr, coords, ei = make_data()
    mask = torch.zeros(14, dtype=torch.bool)
    mask[[1, 5, 9]] = True
    out = model.forward_masked(x_expr.float(), coords.float(), mask, ei)
    assert out.dtype == torch.float32 and np.isfinite(out.detach().numpy()).all()


def test_init_output_sets_the_gene_wise_level():
    model = make_model()
    mean = torch.linspace(0.2, 3.0, N_GENES, dtype=torch.float64)
    model.init_output(mean)
    torch.testing.assert_close(torch.nn.functional.softplus(model.out_bias), mean, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="mean_expr"):
        model.init_output(torch.ones(N_GENES + 1))


def test_default_norm_keeps_deep_stacks_finite_on_large_inputs():
    torch.manual_seed(0)
    model = CifmModule(N_GENES, hidden=16, latent=8, n_layers_enc=3, n_layers_dec=3)
    x_expr, coords, ei = make_data(n=30)
    x_expr = x_expr.float() * 50
    mask = torch.zeros(30, dtype=torch.bool)
    mask[:3] = True
    out = model.forward_masked(x_expr, coords.float(), mask, ei)
    assert torch.isfinite(out).all() and model.hparams["norm"] is True
