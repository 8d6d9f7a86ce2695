"""CIFM: masked geometric autoencoder of cellular microenvironments (eqs. 1-4, B.2-B.3).

Training step (eqs. 2-4), for a graph ``G = {X, C, A(C)}`` and a set ``I`` of
masked cells (5 % in the paper)::

    Z_enc = f_enc(X[~I], C[~I], A(C[~I]))     masked cells are *removed*
    Z_pad = Pad(Z_enc, e, I)                  masked rows get the learnt e
    X_dec = f_dec(Z_pad, C, A(C))             decode on the full graph
    loss  = balanced_mse(X[I], X_dec[I])      eq. 15, models/cifm_loss.py

``f_enc`` and ``f_dec`` are stacks of
:class:`~napari_squint.nn.void_egnn.VoidInvariantEGNNLayer`. For a radius
graph, ``A(C[~I])`` is the subgraph of ``A(C)`` induced by the unmasked cells,
which is how :meth:`CifmModule.forward_masked` builds it, so a masked cell's
expression never reaches the encoder.

Conventions
-----------
* ``x_expr`` is normalised log1p expression (B.1), non-negative; the module
  applies no further normalisation, so an all-zero row is a void cell and the
  encoder is void invariant (eq. 10).
* Coordinates are divided by the ``length_scale`` buffer (set it with
  :meth:`CifmModule.fit_length_scale` to the training data's median
  nearest-neighbour distance, so the unit does not matter) and centred per
  graph. Outputs are invariant to translation, so centring changes nothing but
  the floating-point range.
* ``edge_index`` is ``(2, E)`` int64, both directions of every edge, no self
  loops (the layers add them), e.g. from
  :func:`napari_squint.data.radius.radius_graph`. Several graphs can be
  batched as a disjoint union with a ``batch`` vector, as in PyG.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import subgraph

from napari_squint.data.radius import median_nn_distance, radius_graph
from napari_squint.nn.bias_free_mlp import BiasFreeMLP
from napari_squint.nn.void_egnn import VoidInvariantEGNNLayer, rms_normalise

__all__ = ["CifmModule", "radius_edge_index"]


def radius_edge_index(
    coords: Tensor,
    radius: float,
    *,
    batch: Tensor | None = None,
    max_neighbours: int | None = None,
) -> Tensor:
    """Radius graph of ``coords`` as a torch edge index, one graph per ``batch`` id.

    Parameters
    ----------
    coords
        ``(n, k)`` coordinates, in the units of ``radius``.
    radius
        Connection threshold (see :func:`napari_squint.data.radius.radius_graph`).
    batch
        Optional ``(n,)`` graph index; cells of different graphs are never connected.
    max_neighbours
        Optional degree cap, passed on.

    Returns
    -------
    Tensor
        ``(2, E)`` int64 on ``coords.device``.
    """
    pts = coords.detach().cpu().numpy()
    if batch is None:
        ei = radius_graph(pts, radius, max_neighbours=max_neighbours)
    else:
        b = batch.detach().cpu().numpy()
        parts = []
        for g in np.unique(b):
            idx = np.flatnonzero(b == g)
            parts.append(idx[radius_graph(pts[idx], radius, max_neighbours=max_neighbours)])
        ei = np.concatenate(parts, axis=1) if parts else np.empty((2, 0), np.int64)
    return torch.as_tensor(ei, dtype=torch.long, device=coords.device)


class CifmModule(nn.Module):
    r"""CIFM encoder/decoder with a learnable padding embedding.

    Parameters
    ----------
    n_genes
        Number of genes ``M`` (input and output width).
    hidden
        Width of the EGNN layers.
    latent
        Width ``D`` of the encoder output and of the padding embedding ``e``.
    n_layers_enc, n_layers_dec
        Number of void-invariant EGNN layers in the encoder and decoder (>= 1).
    act
        Zero-preserving activation of every bias-free MLP.
    coord_scale
        Coordinate-update scale of every layer (see
        :class:`~napari_squint.nn.void_egnn.VoidInvariantEGNNLayer`).
    length_scale
        Initial value of the ``length_scale`` buffer (coordinate units per
        model unit); usually set from data with :meth:`fit_length_scale`.
    norm
        Zero-preserving RMS normalisation in every layer and before the head.

    Notes
    -----
    Architecture: ``x_expr -> Linear(M, hidden, bias=False) -> encoder layers
    (hidden -> ... -> latent)``; ``z_pad -> decoder layers (latent -> hidden ->
    ...) -> [RMS norm] -> BiasFreeMLP(hidden, hidden, M) + out_bias ->
    softplus``. Layers whose input and output widths match are residual; with
    ``norm=True`` (default) every layer RMS-normalises its input features
    (zero-preserving, see :class:`~napari_squint.nn.void_egnn.VoidInvariantEGNNLayer`),
    which keeps activations finite on real expression values. Everything up
    to the decoder's head is void invariant. The head's gene-wise ``out_bias``
    (set with :meth:`init_output`) and softplus keep the reconstruction
    non-negative and start it at the mean expression; void invariance of the
    decoder *output* is not required (decoded cells are never void: a masked
    cell carries ``e``, which must therefore not be zero; it is drawn from a
    standard normal).

    Shapes
    ------
    - ``x_expr``: ``(n, n_genes)``; ``coords``: ``(n, k)``; ``edge_index``: ``(2, E)``
    - encoder output: ``(n, latent)``; decoder output: ``(n, n_genes)``
    """

    def __init__(
        self,
        n_genes: int,
        *,
        hidden: int = 128,
        latent: int = 64,
        n_layers_enc: int = 2,
        n_layers_dec: int = 2,
        act: str = "silu",
        coord_scale: float = 0.1,
        length_scale: float = 1.0,
        norm: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("n_genes", n_genes),
            ("hidden", hidden),
            ("latent", latent),
            ("n_layers_enc", n_layers_enc),
            ("n_layers_dec", n_layers_dec),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (float(length_scale) > 0 and np.isfinite(length_scale)):
            raise ValueError(f"length_scale must be a positive finite number, got {length_scale!r}")
        self.n_genes = int(n_genes)
        self.hidden = int(hidden)
        self.latent = int(latent)
        self.hparams = dict(
            n_genes=self.n_genes,
            hidden=self.hidden,
            latent=self.latent,
            n_layers_enc=int(n_layers_enc),
            n_layers_dec=int(n_layers_dec),
            act=act,
            coord_scale=float(coord_scale),
            norm=bool(norm),
        )

        def layer(a: int, b: int) -> VoidInvariantEGNNLayer:
            return VoidInvariantEGNNLayer(
                a, b, hidden, act=act, coord_scale=coord_scale, residual=(a == b), norm=norm
            )

        self.input_proj = nn.Linear(n_genes, hidden, bias=False)
        enc_sizes = [hidden] * n_layers_enc + [latent]
        self.encoder = nn.ModuleList(layer(a, b) for a, b in zip(enc_sizes[:-1], enc_sizes[1:]))
        self.padding = nn.Parameter(torch.empty(latent))  # e in eq. 3
        dec_sizes = [latent] + [hidden] * n_layers_dec
        self.decoder = nn.ModuleList(layer(a, b) for a, b in zip(dec_sizes[:-1], dec_sizes[1:]))
        self.head = BiasFreeMLP(hidden, hidden, n_genes, act=act)
        self.norm = bool(norm)
        self.out_bias = nn.Parameter(torch.zeros(n_genes))
        self.register_buffer("length_scale", torch.tensor(float(length_scale)))
        self.reset_parameters()

    # ------------------------------------------------------------------ setup
    def reset_parameters(self) -> None:
        """Re-initialise all weights; ``e`` is drawn from a standard normal."""
        self.input_proj.reset_parameters()
        for lay in (*self.encoder, *self.decoder):
            lay.reset_parameters()
        self.head.reset_parameters()
        nn.init.normal_(self.padding)
        nn.init.zeros_(self.out_bias)

    @torch.no_grad()
    def init_output(self, mean_expr) -> None:
        """Start the reconstruction at a gene-wise level: ``softplus(out_bias) = mean_expr``.

        Parameters
        ----------
        mean_expr
            ``(n_genes,)`` mean normalised log expression of the training cells.
        """
        m = torch.as_tensor(mean_expr, dtype=self.out_bias.dtype, device=self.out_bias.device)
        if m.shape != (self.n_genes,):
            raise ValueError(f"mean_expr must have shape ({self.n_genes},), got {tuple(m.shape)}")
        m = m.clamp_min(1e-3)
        self.out_bias.copy_(m + torch.log(-torch.expm1(-m)))  # inverse softplus

    @torch.no_grad()
    def fit_length_scale(self, coords) -> float:
        """Set ``length_scale`` to the median nearest-neighbour distance of ``coords``.

        Parameters
        ----------
        coords
            ``(n, k)`` training coordinates (tensor or array).

        Returns
        -------
        float
            The new length scale, in coordinate units.
        """
        if isinstance(coords, Tensor):
            coords = coords.detach().cpu().numpy()
        value = median_nn_distance(coords)
        self.length_scale.fill_(value)
        return value

    # ---------------------------------------------------------------- helpers
    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        p = self.padding
        return p.dtype, p.device

    def _check_expr(self, x_expr: Tensor) -> Tensor:
        if x_expr.dim() != 2 or x_expr.shape[1] != self.n_genes:
            raise ValueError(
                f"x_expr must have shape (n, {self.n_genes}), got {tuple(x_expr.shape)}"
            )
        return x_expr.to(self.padding.dtype)

    def normalise_coords(self, coords, *, batch: Tensor | None = None) -> Tensor:
        """Centre ``coords`` per graph and divide by ``length_scale``.

        Parameters
        ----------
        coords
            ``(n, k)`` coordinates in data units.
        batch
            Optional ``(n,)`` graph index; each graph is centred on its own mean.

        Returns
        -------
        Tensor
            ``(n, k)`` coordinates in model units, in the module's dtype.
        """
        dtype, device = self._dtype_device()
        c = torch.as_tensor(coords, dtype=dtype, device=device)
        if c.dim() != 2:
            raise ValueError(f"coords must have shape (n, k), got {tuple(c.shape)}")
        if c.shape[0] == 0:
            return c
        if batch is None:
            centre = c.mean(dim=0, keepdim=True)
        else:
            n_graphs = int(batch.max()) + 1
            sums = c.new_zeros(n_graphs, c.shape[1]).index_add(0, batch, c)
            counts = c.new_zeros(n_graphs).index_add(0, batch, c.new_ones(c.shape[0]))
            centre = (sums / counts.clamp_min(1).unsqueeze(1))[batch]
        return (c - centre) / self.length_scale

    @staticmethod
    def _stack(
        layers: nn.ModuleList, z: Tensor, x: Tensor, edge_index: Tensor
    ) -> tuple[Tensor, Tensor]:
        for lay in layers:
            z, x = lay(z, x, edge_index)
        return z, x

    def _edges(self, coords, edge_index, radius, batch, n: int) -> Tensor:
        if edge_index is not None:
            if edge_index.dim() != 2 or edge_index.shape[0] != 2:
                raise ValueError(
                    f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}"
                )
            return edge_index.to(device=self.padding.device, dtype=torch.long)
        if radius is None:
            raise ValueError("give either edge_index or radius (in the units of coords)")
        c = torch.as_tensor(coords)
        if c.shape[0] != n:
            raise ValueError(f"coords must have {n} rows, got {c.shape[0]}")
        return radius_edge_index(c, radius, batch=batch).to(self.padding.device)

    # ------------------------------------------------------------- interface
    def encode(
        self, x_expr: Tensor, coords, edge_index: Tensor, *, batch: Tensor | None = None
    ) -> Tensor:
        """Encoder ``f_enc``: expression and geometry to invariant embeddings.

        Parameters
        ----------
        x_expr
            ``(n, n_genes)`` normalised log expression.
        coords
            ``(n, k)`` coordinates in data units.
        edge_index
            ``(2, E)`` int64 edges among these ``n`` cells.
        batch
            Optional ``(n,)`` graph index (for centring).

        Returns
        -------
        Tensor
            ``(n, latent)`` embeddings ``Z_enc``; all-zero rows of ``x_expr``
            give all-zero rows and do not affect the others.
        """
        x_expr = self._check_expr(x_expr)
        x = self.normalise_coords(coords, batch=batch)
        if x.shape[0] != x_expr.shape[0]:
            raise ValueError(
                f"coords has {x.shape[0]} rows but x_expr has {x_expr.shape[0]}"
            )
        z, _ = self._stack(self.encoder, self.input_proj(x_expr), x, edge_index)
        return z

    def pad(self, z_enc: Tensor, mask: Tensor) -> Tensor:
        """``Pad(Z_enc, e, I)``: put ``e`` at the masked positions.

        Parameters
        ----------
        z_enc
            ``(n_unmasked, latent)`` encoder output, rows in the order of the
            unmasked cells.
        mask
            ``(n,)`` bool, True for masked cells.

        Returns
        -------
        Tensor
            ``(n, latent)`` with ``z_pad[mask] = e`` and ``z_pad[~mask] = z_enc``.
        """
        keep = torch.nonzero(~mask, as_tuple=False).squeeze(1)
        if keep.numel() != z_enc.shape[0]:
            raise ValueError(
                f"z_enc has {z_enc.shape[0]} rows but mask has {keep.numel()} unmasked cells"
            )
        z_pad = self.padding.unsqueeze(0).expand(mask.shape[0], -1)
        return z_pad.index_copy(0, keep, z_enc.to(z_pad.dtype))

    def decode(
        self, z_pad: Tensor, coords, edge_index: Tensor, *, batch: Tensor | None = None
    ) -> Tensor:
        """Decoder ``f_dec``: padded embeddings on the full graph to expression.

        Parameters
        ----------
        z_pad
            ``(n, latent)`` embeddings (``e`` at masked cells).
        coords
            ``(n, k)`` coordinates of all cells, in data units.
        edge_index
            ``(2, E)`` int64 edges of the full graph ``A(C)``.
        batch
            Optional ``(n,)`` graph index.

        Returns
        -------
        Tensor
            ``(n, n_genes)`` non-negative reconstruction ``X_dec``.
        """
        if z_pad.dim() != 2 or z_pad.shape[1] != self.latent:
            raise ValueError(f"z_pad must have shape (n, {self.latent}), got {tuple(z_pad.shape)}")
        x = self.normalise_coords(coords, batch=batch)
        z, _ = self._stack(self.decoder, z_pad, x, edge_index)
        if self.norm:
            z = rms_normalise(z)
        return F.softplus(self.head(z) + self.out_bias)

    def forward_masked(
        self,
        x_expr: Tensor,
        coords,
        mask: Tensor,
        edge_index: Tensor | None = None,
        *,
        radius: float | None = None,
        batch: Tensor | None = None,
    ) -> Tensor:
        """Mask, encode, pad and decode (eqs. 2-3); return the masked cells' reconstruction.

        Parameters
        ----------
        x_expr
            ``(n, n_genes)`` normalised log expression of all cells.
        coords
            ``(n, k)`` coordinates in data units.
        mask
            ``(n,)`` bool, True for the masked cells ``I``.
        edge_index
            ``(2, E)`` edges of the full graph ``A(C)``. The encoder uses the
            subgraph induced by the unmasked cells, re-indexed.
        radius
            Used when ``edge_index`` is None: build the radius graph, in the
            units of ``coords``.
        batch
            Optional ``(n,)`` graph index for batched graphs.

        Returns
        -------
        Tensor
            ``(n_masked, n_genes)`` reconstruction ``X_dec[I]``, rows in
            increasing cell index (the order of ``x_expr[mask]``), so the loss
            is ``balanced_mse(x_expr[mask], out)``.
        """
        x_expr = self._check_expr(x_expr)
        n = x_expr.shape[0]
        mask = torch.as_tensor(mask, device=x_expr.device)
        if mask.dtype != torch.bool or mask.shape != (n,):
            raise ValueError(f"mask must be a bool tensor of shape ({n},), got "
                             f"{mask.dtype} of shape {tuple(mask.shape)}")
        coords = torch.as_tensor(coords)
        edge_index = self._edges(coords, edge_index, radius, batch, n)
        keep = ~mask
        enc_edges, _ = subgraph(keep, edge_index, relabel_nodes=True, num_nodes=n)
        z_enc = self.encode(
            x_expr[keep],
            coords[keep.to(coords.device)],
            enc_edges,
            batch=None if batch is None else batch[keep],
        )
        z_pad = self.pad(z_enc, mask)
        x_dec = self.decode(z_pad, coords, edge_index, batch=batch)
        return x_dec[mask]

    def forward(self, x_expr: Tensor, coords, mask: Tensor, edge_index=None, **kwargs) -> Tensor:
        """Alias of :meth:`forward_masked`."""
        return self.forward_masked(x_expr, coords, mask, edge_index, **kwargs)

    def embed(
        self,
        x_expr: Tensor,
        coords,
        edge_index: Tensor | None = None,
        *,
        radius: float | None = None,
        batch: Tensor | None = None,
    ) -> Tensor:
        """Microenvironment embedding: the encoder on the full graph, no masking.

        Parameters
        ----------
        x_expr, coords, edge_index, radius, batch
            As in :meth:`forward_masked` (``edge_index`` or ``radius``).

        Returns
        -------
        Tensor
            ``(n, latent)``. Gradients flow (wrap in :func:`torch.no_grad` for inference).
        """
        x_expr = self._check_expr(x_expr)
        edge_index = self._edges(coords, edge_index, radius, batch, x_expr.shape[0])
        return self.encode(x_expr, coords, edge_index, batch=batch)

    def embed_cells(self, x_expr: Tensor, coords=None) -> Tensor:
        """Cell embedding: the encoder with every edge removed.

        Only self loops remain, so each row depends on that cell's expression
        alone (coordinates do not matter).

        Parameters
        ----------
        x_expr
            ``(n, n_genes)`` normalised log expression.
        coords
            Ignored apart from its shape; ``None`` uses zeros.

        Returns
        -------
        Tensor
            ``(n, latent)``.
        """
        x_expr = self._check_expr(x_expr)
        if coords is None:
            coords = x_expr.new_zeros(x_expr.shape[0], 2)
        empty = torch.empty(2, 0, dtype=torch.long, device=x_expr.device)
        return self.encode(x_expr, coords, empty)

    def extra_repr(self) -> str:
        h = self.hparams
        return (
            f"n_genes={h['n_genes']}, hidden={h['hidden']}, latent={h['latent']}, "
            f"n_layers_enc={h['n_layers_enc']}, n_layers_dec={h['n_layers_dec']}"
        )
