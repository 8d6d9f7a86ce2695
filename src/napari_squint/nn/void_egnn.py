"""Void-invariant E(n)-equivariant graph layer of CIFM (appendix B.2, eqs. 11-14).

For a target node ``i`` and each neighbour ``j`` (``A(C)[i, j] = 1``)::

    Int_ij  = BFMLP1(<z_i, z_j> / sqrt(d))                              (11)
    Msg_ij  = BFMLP2((z_i ⊕ z_j ⊕ ||x_i - x_j||) * Int_ij)              (12)
    x_i'    = x_i + s * Σ_j (x_i - x_j) * tanh(BFMLP3(Msg_ij))          (13)
    z_i'    = BFMLP4(Σ_j Msg_ij)  [+ z_i if residual]                   (14)

Why it is void invariant (eq. 10): a void node has ``z = 0``. Then the inner
product with any neighbour is 0, and a bias-free MLP maps 0 to 0, so
``Int_ij = 0`` whenever ``i`` or ``j`` is void. Multiplying the whole
concatenation -- distance included -- by ``Int_ij`` makes the input of
BFMLP2 zero, so ``Msg_ij = 0`` and the coordinate term
``(x_i - x_j) * tanh(BFMLP3(0)) = 0``. Sum pooling adds exact zeros (a mean
would change with the number of neighbours). Hence real nodes do not see void
nodes, and void nodes stay void (``z' = BFMLP4(0) = 0``, ``x' = x``), so the
property holds through any stack of layers.

Choices beyond the paper's equations, all keeping the properties above:

* the inner product is divided by ``sqrt(in_channels)`` (as in dot-product
  attention) so the intensity does not grow with the width;
* the coordinate update is bounded by a ``tanh`` (``tanh(0) = 0``) and
  multiplied by ``coord_scale`` (default 0.1): with sum pooling the raw
  update grows with the node degree and can blow coordinates up early in
  training. Each edge then moves ``x_i`` by at most
  ``coord_scale * ||x_i - x_j||``;
* optional zero-preserving RMS normalisation (``norm=True``): the features
  entering eqs. 11-12 are ``g * z / sqrt(mean(z^2) + eps)`` (no centring, no
  bias, so a void row stays exactly zero) and the inner product is divided
  by ``in_channels`` (a cosine-like value in ``[-1, 1]``). Without it the
  message grows like ``|z|^3`` per layer (intensity ``~ |z|^2`` times the
  features), which overflows a few layers deep on real expression values.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from napari_squint.nn.bias_free_mlp import BiasFreeMLP

__all__ = ["VoidInvariantEGNNLayer", "rms_normalise"]


def rms_normalise(z: Tensor, eps: float = 1e-6) -> Tensor:
    """``z / sqrt(mean(z^2) + eps)`` over the last axis; an all-zero row stays zero.

    Parameters
    ----------
    z
        ``(*, d)`` features.
    eps
        Positive constant; keeps the map (and its gradient) finite at 0.

    Returns
    -------
    Tensor
        ``(*, d)`` rows of root-mean-square about 1 (0 for void rows).
    """
    return z * torch.rsqrt((z * z).mean(dim=-1, keepdim=True) + eps)


def _safe_norm(diff: Tensor) -> Tensor:
    """Euclidean norm over the last axis with a finite gradient at 0.

    ``torch.linalg.norm`` has a NaN gradient at the zero vector (e.g. on self
    loops or coincident cells); here the gradient there is 0.
    """
    sq = (diff * diff).sum(dim=-1, keepdim=True)
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), 0.0)


class VoidInvariantEGNNLayer(nn.Module):
    r"""Void-invariant EGNN message-passing layer (CIFM, eqs. 11-14).

    Equivariant to node permutations, to rotations, reflections and
    translations of the coordinates (``z`` invariant, ``x`` equivariant), and
    invariant to void nodes (all-zero ``z``) anywhere in the graph (eq. 10).

    Parameters
    ----------
    in_channels
        Size ``d`` of the input invariant features ``z``.
    out_channels
        Size of the output invariant features.
    hidden_channels
        Width of the hidden layers and of the message; defaults to ``out_channels``.
    act
        Zero-preserving activation of the bias-free MLPs (see
        :class:`~napari_squint.nn.bias_free_mlp.BiasFreeMLP`).
    coord_scale
        Factor ``s`` on the coordinate update (eq. 13), for stability; ``0``
        freezes the coordinates.
    residual
        Add the input ``z`` to the output (``z' = z + BFMLP4(...)``); needs
        ``in_channels == out_channels``. Keeps void invariance (``0 + 0 = 0``).
    add_self_loops
        Also pass a message from every node to itself. The paper's adjacency
        ``A(C)[i, j] = 1 if ||C_i - C_j|| <= r`` includes ``i = j``; without it
        a node with no neighbour would get ``z' = BFMLP4(0) = 0``. Self loops
        do not move coordinates (``x_i - x_i = 0``) and a void node's self
        message is zero.
    norm
        RMS-normalise the input features (with a learnable gain) before the
        intensity and the message, and divide the inner product by
        ``in_channels`` instead of ``sqrt(in_channels)``; the residual adds
        the un-normalised ``z``. Zero-preserving, so void invariance holds.

    Shapes
    ------
    - ``z``: ``(n, in_channels)`` invariant node features
    - ``x``: ``(n, k)`` coordinates (``k`` = 2 or 3)
    - ``edge_index``: ``(2, E)`` int64, ``edge_index[0]`` = source ``j``,
      ``edge_index[1]`` = target ``i`` (PyG convention); should hold both
      directions of every undirected edge and no self loops when
      ``add_self_loops`` is True
    - output: ``(z', x')`` of shapes ``(n, out_channels)`` and ``(n, k)``
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int | None = None,
        *,
        act: str = "silu",
        coord_scale: float = 0.1,
        residual: bool = False,
        add_self_loops: bool = True,
        norm: bool = False,
    ) -> None:
        super().__init__()
        if hidden_channels is None:
            hidden_channels = out_channels
        if not (isinstance(coord_scale, (int, float)) and math.isfinite(coord_scale)):
            raise ValueError(f"coord_scale must be a finite number, got {coord_scale!r}")
        if coord_scale < 0:
            raise ValueError(f"coord_scale must be >= 0, got {coord_scale!r}")
        if residual and in_channels != out_channels:
            raise ValueError(
                f"residual=True needs in_channels == out_channels, got "
                f"in_channels={in_channels}, out_channels={out_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.coord_scale = float(coord_scale)
        self.residual = residual
        self.add_self_loops = add_self_loops
        self.norm = bool(norm)

        h = hidden_channels
        self.norm_gain = nn.Parameter(torch.ones(in_channels)) if self.norm else None
        self.mlp_int = BiasFreeMLP(1, h, 1, act=act)  # BFMLP1, eq. 11
        self.mlp_msg = BiasFreeMLP(2 * in_channels + 1, h, h, act=act, act_last=True)  # eq. 12
        self.mlp_coord = BiasFreeMLP(h, h, 1, act=act)  # BFMLP3, eq. 13
        self.mlp_node = BiasFreeMLP(h, h, out_channels, act=act)  # BFMLP4, eq. 14
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise all weights.

        The last layer of the coordinate MLP starts near zero (Xavier, gain
        0.001, as in the EGNN reference code), so coordinates barely move at
        the start of training.
        """
        for mlp in (self.mlp_int, self.mlp_msg, self.mlp_coord, self.mlp_node):
            mlp.reset_parameters()
        if self.norm_gain is not None:
            nn.init.ones_(self.norm_gain)
        nn.init.xavier_uniform_(self.mlp_coord.last.weight, gain=0.001)

    def forward(self, z: Tensor, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        """Run one round of message passing.

        Parameters
        ----------
        z
            ``(n, in_channels)`` invariant features; void nodes are all-zero rows.
        x
            ``(n, k)`` coordinates.
        edge_index
            ``(2, E)`` int64 edges, ``[source j; target i]``.

        Returns
        -------
        z_new
            ``(n, out_channels)`` invariant features.
        x_new
            ``(n, k)`` updated (equivariant) coordinates.
        """
        if z.dim() != 2 or z.shape[1] != self.in_channels:
            raise ValueError(
                f"z must have shape (n, {self.in_channels}), got {tuple(z.shape)}"
            )
        if x.dim() != 2 or x.shape[0] != z.shape[0]:
            raise ValueError(
                f"x must have shape (n, k) with n = {z.shape[0]} rows, got {tuple(x.shape)}"
            )
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
        if edge_index.dtype != torch.long:
            raise ValueError(f"edge_index must be int64, got {edge_index.dtype}")

        n = z.shape[0]
        src, dst = edge_index[0], edge_index[1]
        if self.add_self_loops:
            loop = torch.arange(n, device=z.device)
            src = torch.cat([src, loop])
            dst = torch.cat([dst, loop])

        if self.norm:
            zn = rms_normalise(z) * self.norm_gain
            z_i, z_j = zn[dst], zn[src]
            inner = (z_i * z_j).sum(dim=-1, keepdim=True) / self.in_channels
        else:
            z_i, z_j = z[dst], z[src]
            inner = (z_i * z_j).sum(dim=-1, keepdim=True) / math.sqrt(self.in_channels)
        intensity = self.mlp_int(inner)  # (E, 1), zero if i or j is void
        diff = x[dst] - x[src]  # (E, k)
        msg_in = torch.cat([z_i, z_j, _safe_norm(diff)], dim=-1) * intensity
        msg = self.mlp_msg(msg_in)  # (E, hidden), zero if i or j is void

        agg = z.new_zeros(n, self.hidden_channels).index_add(0, dst, msg)  # sum pooling
        z_new = self.mlp_node(agg)
        if self.residual:
            z_new = z_new + z

        if self.coord_scale > 0:
            weight = torch.tanh(self.mlp_coord(msg))  # (E, 1)
            shift = x.new_zeros(x.shape).index_add(0, dst, diff * weight)
            x_new = x + self.coord_scale * shift
        else:
            x_new = x
        return z_new, x_new

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"hidden_channels={self.hidden_channels}, coord_scale={self.coord_scale}, "
            f"residual={self.residual}, add_self_loops={self.add_self_loops}, norm={self.norm})"
        )
