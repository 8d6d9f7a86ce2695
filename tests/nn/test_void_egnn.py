"""Void-invariant EGNN layer: permutation, E(n) and void symmetry (CIFM eqs. 5, 6, 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_squint.data.radius import radius_graph
from napari_squint.nn.bias_free_mlp import BiasFreeMLP
from napari_squint.nn.void_egnn import VoidInvariantEGNNLayer

TOL = dict(rtol=1e-9, atol=1e-10)
RADIUS = 1.5


def make_layer(d_in=5, d_out=5, *, seed=0, **kw) -> VoidInvariantEGNNLayer:
    torch.manual_seed(seed)
    layer = VoidInvariantEGNNLayer(d_in, d_out, hidden_channels=7, **kw).double()
    # the default coordinate init is ~0; make the coordinate update visible
    torch.nn.init.normal_(layer.mlp_coord.last.weight, std=1.0)
    return layer


def make_graph(n=10, d=5, k=2, *, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    x = torch.rand(n, k, generator=g, dtype=torch.float64) * 3
    ei = torch.as_tensor(radius_graph(x.numpy(), RADIUS))
    assert ei.shape[1] > 0
    return z, x, ei


def rotation(k: int, seed: int = 0, *, reflect: bool = False) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(k, k, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def test_bias_free_mlp_maps_zero_to_zero():
    for act in ("silu", "relu", "tanh", "gelu", "leaky_relu"):
        mlp = BiasFreeMLP(4, 6, 3, num_layers=3, act=act, act_last=True).double()
        out = mlp(torch.zeros(2, 4, dtype=torch.float64))
        assert torch.equal(out, torch.zeros(2, 3, dtype=torch.float64))
        assert all(lin.bias is None for lin in mlp.lins)
    with pytest.raises(ValueError, match="act"):
        BiasFreeMLP(4, 6, 3, act="sigmoid")  # sigmoid(0) != 0
    with pytest.raises(ValueError, match="num_layers"):
        BiasFreeMLP(4, 6, 3, num_layers=0)


def test_shapes_and_repr():
    layer = make_layer(5, 3)
    z, x, ei = make_graph()
    z2, x2 = layer(z, x, ei)
    assert z2.shape == (10, 3) and x2.shape == (10, 2)
    assert "VoidInvariantEGNNLayer(5, 3" in repr(layer)
    assert not torch.allclose(x2, x)  # coordinates do move


def test_permutation_equivariance():
    layer = make_layer()
    z, x, ei = make_graph()
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(10)
    z_ref, x_ref = layer(z, x, ei)
    z_p, x_p = layer(z[perm], x[perm], inv[ei])
    torch.testing.assert_close(z_p, z_ref[perm], **TOL)
    torch.testing.assert_close(x_p, x_ref[perm], **TOL)
    # reordering the edge list changes nothing either
    e_perm = torch.randperm(ei.shape[1], generator=torch.Generator().manual_seed(4))
    z_e, x_e = layer(z, x, ei[:, e_perm])
    torch.testing.assert_close(z_e, z_ref, **TOL)
    torch.testing.assert_close(x_e, x_ref, **TOL)


@pytest.mark.parametrize(("k", "reflect"), [(2, False), (2, True), (3, False)])
def test_rotation_translation_equivariance(k, reflect):
    layer = make_layer()
    z, x, ei = make_graph(k=k)
    R = rotation(k, seed=k, reflect=reflect)
    t = torch.tensor([5.0, -2.0, 1.0][:k], dtype=torch.float64)
    z_ref, x_ref = layer(z, x, ei)
    z_t, x_t = layer(z, x @ R + t, ei)
    torch.testing.assert_close(z_t, z_ref, **TOL)
    torch.testing.assert_close(x_t, x_ref @ R + t, **TOL)


def _with_voids(z, x, n_void, *, seed=0, k=2):
    """Append void nodes scattered among the real ones; rebuild the radius graph."""
    g = torch.Generator().manual_seed(seed)
    xv = torch.rand(n_void, k, generator=g, dtype=torch.float64) * 3
    zv = torch.zeros(n_void, z.shape[1], dtype=torch.float64)
    # insert the void nodes at random positions, not only at the end
    n = z.shape[0] + n_void
    order = torch.randperm(n, generator=g)
    z_all, x_all = torch.cat([z, zv])[order], torch.cat([x, xv])[order]
    ei = torch.as_tensor(radius_graph(x_all.numpy(), RADIUS))
    real_pos = torch.empty(n, dtype=torch.long)
    real_pos[order] = torch.arange(n)
    real_idx = real_pos[: z.shape[0]]  # where each original real node now sits
    is_void = torch.ones(n, dtype=torch.bool)
    is_void[real_idx] = False
    # the voids are really connected to real nodes
    assert (is_void[ei[0]] & ~is_void[ei[1]]).any()
    return z_all, x_all, ei, real_idx, is_void


def test_void_invariance_single_layer():
    layer = make_layer()
    z, x, ei = make_graph()
    z_ref, x_ref = layer(z, x, ei)
    z_all, x_all, ei_all, real_idx, is_void = _with_voids(z, x, 8)
    z2, x2 = layer(z_all, x_all, ei_all)
    torch.testing.assert_close(z2[real_idx], z_ref, **TOL)
    torch.testing.assert_close(x2[real_idx], x_ref, **TOL)
    # void nodes stay void and do not move, so stacks of layers stay invariant
    assert torch.equal(z2[is_void], torch.zeros_like(z2[is_void]))
    assert torch.equal(x2[is_void], x_all[is_void])


def test_void_invariance_stack_with_residual():
    layers = [make_layer(5, 5, seed=0, residual=True), make_layer(5, 4, seed=1)]

    def run(z, x, ei):
        for lay in layers:
            z, x = lay(z, x, ei)
        return z, x

    z, x, ei = make_graph(k=3, seed=5)
    z_ref, x_ref = run(z, x, ei)
    z_all, x_all, ei_all, real_idx, is_void = _with_voids(z, x, 6, seed=1, k=3)
    z2, x2 = run(z_all, x_all, ei_all)
    torch.testing.assert_close(z2[real_idx], z_ref, **TOL)
    torch.testing.assert_close(x2[real_idx], x_ref, **TOL)
    assert torch.equal(z2[is_void], torch.zeros_like(z2[is_void]))


def test_voids_enter_real_neighbourhoods():
    """The void tests are sensitive: voids raise real nodes' degrees, so a mean
    pooling (dividing by the degree) would change their outputs."""
    z, x, ei = make_graph()
    z_all, x_all, ei_all, real_idx, _ = _with_voids(z, x, 8)
    deg_real = torch.bincount(ei[1], minlength=10)
    deg_all = torch.bincount(ei_all[1], minlength=z_all.shape[0])[real_idx]
    assert (deg_all > deg_real).any()


def test_isolated_node_keeps_its_own_information():
    layer = make_layer()
    z, x, _ = make_graph()
    empty = torch.empty(2, 0, dtype=torch.long)
    z2, x2 = layer(z, x, empty)
    assert torch.equal(x2, x)
    # each row depends on that node alone
    z_one, _ = layer(z[3:4], x[3:4] + 7.0, empty)
    torch.testing.assert_close(z_one[0], z2[3], **TOL)
    assert z2.abs().sum(dim=1).min() > 0
    # without self loops an isolated node collapses to the void
    no_loops = make_layer(add_self_loops=False)
    z3, _ = no_loops(z, x, empty)
    assert torch.equal(z3, torch.zeros_like(z3))


def test_gradient_finite_for_coincident_nodes():
    layer = make_layer()
    z = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    ei = torch.as_tensor(radius_graph(x.detach().numpy(), 1.5))
    z2, x2 = layer(z, x, ei)
    (z2.sum() + x2.sum()).backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(x.grad).all()


def test_coord_scale_zero_freezes_coordinates():
    layer = make_layer(coord_scale=0.0)
    z, x, ei = make_graph()
    assert torch.equal(layer(z, x, ei)[1], x)


def test_coordinate_update_is_bounded():
    layer = make_layer(coord_scale=0.1)
    z, x, ei = make_graph()
    _, x2 = layer(z, x, ei)
    dist = (x[ei[1]] - x[ei[0]]).norm(dim=1)
    bound = torch.zeros(10, dtype=torch.float64).index_add(0, ei[1], dist) * 0.1
    assert ((x2 - x).norm(dim=1) <= bound + 1e-12).all()


def test_reset_parameters_is_deterministic():
    layer = make_layer()
    torch.manual_seed(11)
    layer.reset_parameters()
    a = [p.clone() for p in layer.parameters()]
    torch.manual_seed(11)
    layer.reset_parameters()
    assert all(torch.equal(p, q) for p, q in zip(a, layer.parameters()))
    assert layer.mlp_coord.last.weight.abs().max() < 0.01  # near-zero coordinate init


def test_invalid_arguments():
    with pytest.raises(ValueError, match="residual"):
        VoidInvariantEGNNLayer(4, 3, residual=True)
    with pytest.raises(ValueError, match="coord_scale"):
        VoidInvariantEGNNLayer(4, 4, coord_scale=-1.0)
    with pytest.raises(ValueError, match="coord_scale"):
        VoidInvariantEGNNLayer(4, 4, coord_scale=math.nan)
    layer = make_layer()
    z, x, ei = make_graph()
    with pytest.raises(ValueError, match="z must"):
        layer(z[:, :3], x, ei)
    with pytest.raises(ValueError, match="x must"):
        layer(z, x[:5], ei)
    with pytest.raises(ValueError, match="edge_index"):
        layer(z, x, ei.T)
    with pytest.raises(ValueError, match="edge_index"):
        layer(z, x, ei.int())


def test_float32_runs():
    layer = VoidInvariantEGNNLayer(5, 5)
    z, x, ei = make_graph()
    z2, x2 = layer(z.float(), x.float(), ei)
    assert z2.dtype == torch.float32 and np.isfinite(z2.detach().numpy()).all()


def test_rms_normalise_keeps_void_rows_zero():
    from napari_squint.nn.void_egnn import rms_normalise

    z = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]], dtype=torch.float64, requires_grad=True)
    out = rms_normalise(z)
    assert torch.equal(out[0], torch.zeros(3, dtype=torch.float64))
    assert (out[1] ** 2).mean().item() == pytest.approx(1.0, rel=1e-5)
    out.sum().backward()
    assert torch.isfinite(z.grad).all()  # the derivative at a void row exists


@pytest.mark.parametrize("reflect", [False, True])
def test_normalised_stack_keeps_every_symmetry(reflect):
    layers = [make_layer(5, 5, seed=0, residual=True, norm=True), make_layer(5, 4, seed=1, norm=True)]
    for lay in layers:  # non-trivial gains
        torch.nn.init.uniform_(lay.norm_gain, 0.5, 1.5)

    def run(z, x, ei):
        for lay in layers:
            z, x = lay(z, x, ei)
        return z, x

    z, x, ei = make_graph(k=3, seed=6)
    z = z * 40.0  # large inputs stay finite and bounded with norm=True
    z_ref, x_ref = run(z, x, ei)
    assert torch.isfinite(z_ref).all() and z_ref.abs().max() < 1e4
    z_all, x_all, ei_all, real_idx, is_void = _with_voids(z, x, 6, seed=2, k=3)
    z2, x2 = run(z_all, x_all, ei_all)
    torch.testing.assert_close(z2[real_idx], z_ref, **TOL)
    torch.testing.assert_close(x2[real_idx], x_ref, **TOL)
    assert torch.equal(z2[is_void], torch.zeros_like(z2[is_void]))
    R, t = rotation(3, seed=4, reflect=reflect), torch.tensor([5.0, -2.0, 1.0], dtype=torch.float64)
    z_t, x_t = run(z, x @ R + t, ei)
    torch.testing.assert_close(z_t, z_ref, **TOL)
    torch.testing.assert_close(x_t, x_ref @ R + t, **TOL)
    assert "norm=True" in repr(layers[0])
