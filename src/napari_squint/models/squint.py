"""The SQuINT graph VQ-VAE (paper section 4): encoder, codebook, two decoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import SAGEConv

from napari_squint.data.batch import Batch
from napari_squint.nn.centre import SyncCentre
from napari_squint.nn.codebook import CosineCodebook
from napari_squint.nn.film import FiLM
from napari_squint.nn.mlp import mlp, mlp_masked_rows
from napari_squint.nn.nb import nb_log_likelihood, nb_nll_mean
from napari_squint.config import ModelConfig


def _nb_loss(x, mu, theta, w, log_x_factorial):
    """Mean NB negative log-likelihood, weighted per row by ``w`` (None: all 1); the data constant comes
    precomputed per row when the batch carries it (training batches)."""
    if w is None and log_x_factorial is not None:
        return nb_nll_mean(x, mu, theta, log_x_factorial.to(mu.dtype))
    ll = nb_log_likelihood(x, mu, theta)
    return -(ll if w is None else w * ll).mean()


class FiLMDecoder(nn.Module):
    """MLP from a code to gene logits, with FiLM conditioning at each hidden layer.

    Two linear heads share the trunk: ``out`` gives the microenvironment
    (X_nbr, the paper's target) and ``out_cell`` the cell's own profile (X),
    which the in-painting task reports beside X_nbr.
    """

    def __init__(self, latent: int, hidden: int, n_genes: int, cond_dim: int, n_layers: int = 2):
        super().__init__()
        sizes = [latent] + [hidden] * n_layers
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in sizes[1:])
        self.films = nn.ModuleList(FiLM(cond_dim, b) for b in sizes[1:]) if cond_dim > 0 else None
        self.out = nn.Linear(hidden, n_genes)
        self.out_cell = nn.Linear(hidden, n_genes)
        # output weights start at zero: every code first decodes to the (bias) mean profile. Random output weights
        # add random deviations that the sharp likelihood of high-count targets (X_nbr) punishes at once, and the
        # fastest fix the optimiser finds is to make the latents constant (measured on the synthetic tissue)
        for lin in (self.out, self.out_cell):
            nn.init.zeros_(lin.weight)

    def trunk(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        h = z
        for i, (lin, norm) in enumerate(zip(self.linears, self.norms)):
            h = norm(lin(h))
            if self.films is not None:
                h = self.films[i](h, c)
            h = F.gelu(h)
        return h

    def forward(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return self.out(self.trunk(z, c))


class SquintModule(nn.Module):
    """Graph VQ-VAE of SQuINT.

    Encoder: 2-layer MLP on (masked) inputs -> GraphSAGE (mean) -> FiLM on
    [C, section embedding] (zero-initialised, residual). Quantiser: multi-head
    cosine codebook. Decoders: a FiLM MLP giving a softmax over genes scaled by
    the neighbourhood's read depth (negative-binomial mean of X_nbr), and an
    inner-product adjacency decoder on edge vectors computed from the codes.

    Parameters
    ----------
    n_genes
        Input and output genes (g).
    n_batches
        Sections seen in training; id ``n_batches`` means "unknown section".
    n_cond
        Width of the relative-distance covariates C.
    cfg
        :class:`~napari_squint.config.ModelConfig`.
    """

    def __init__(self, n_genes: int, n_batches: int, n_cond: int, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.n_genes, self.n_batches, self.n_cond = n_genes, n_batches, n_cond
        # the encoder's input genes (ModelConfig.input_genes): their positions in the panel, chosen from the
        # training counts by the model's owner (api/squint.py); all genes, in order, when not narrowed
        n_in = n_genes if cfg.input_genes is None else min(int(cfg.input_genes), n_genes)
        self.n_input = n_in
        self.register_buffer("input_idx", torch.arange(n_in))
        self.mask_token = nn.Parameter(torch.zeros(n_in), requires_grad=cfg.learnable_mask)
        self.enc_mlp = mlp([n_in, cfg.hidden, cfg.hidden], last_activation=True)
        self.sage = SAGEConv(cfg.hidden, cfg.latent, aggr="mean")
        cond_dim = (n_cond + cfg.batch_embed) if cfg.use_covariates else 0
        self.cond_dim = cond_dim
        self.batch_emb = nn.Embedding(n_batches + 1, cfg.batch_embed)
        self.enc_film = FiLM(cond_dim, cfg.latent) if cond_dim else None
        # centre latents (running mean/var, no affine) so that cosine assignment is
        # not dominated by a direction shared by every cell, which collapses codebooks
        self.centre = SyncCentre(cfg.latent, momentum=0.05)
        self.codebook = CosineCodebook(cfg.latent, cfg.codebook_size, heads=cfg.heads,
                                       decay=cfg.ema_decay, dead_threshold=cfg.dead_threshold)
        self.decoder = FiLMDecoder(cfg.latent, cfg.hidden, n_genes, cond_dim)
        self.log_theta = nn.Parameter(torch.full((n_genes,), 2.0))
        self.log_theta_cell = nn.Parameter(torch.full((n_genes,), 1.0))
        self.adj = mlp([cfg.latent, cfg.hidden, cfg.adj_dim], norm=False)
        # masked-code head: from a masked cell's latent, per-head logits over the codes the cell gets when observed;
        # fitted after training with the encoder frozen (train/code_head.py)
        # (with cfg.code_head_context it also reads the codes of the cell's observed neighbours: per head, the share
        # of those neighbours holding each code)
        ctx_dim = cfg.heads * cfg.codebook_size if cfg.code_head_context else 0
        n_out = cfg.heads * cfg.codebook_size
        self.code_head = mlp([cfg.latent + ctx_dim, cfg.hidden, n_out]) if cfg.code_head else None
        # the tokens (per-head codes) that training cells use, with their counts: the support of the head's draws,
        # filled after training (train/code_head.py)
        self.register_buffer("token_codes", torch.zeros(0, cfg.heads, dtype=torch.long))
        self.register_buffer("token_counts", torch.zeros(0))

    @torch.no_grad()
    def init_from_data(self, gene_props: torch.Tensor, theta_nbr: torch.Tensor | None = None,
                       theta_cell: torch.Tensor | None = None) -> None:
        """Start the decoder at the data's mean gene proportions (softmax bias = log p) and
        the dispersions at their method-of-moments estimates under that mean profile."""
        self.decoder.out.bias.copy_(torch.log(gene_props.clamp(min=1e-8)).to(self.decoder.out.bias))
        self.decoder.out_cell.bias.copy_(torch.log(gene_props.clamp(min=1e-8)).to(self.decoder.out.bias))
        if theta_nbr is not None:
            self.log_theta.copy_(torch.log(theta_nbr).to(self.log_theta))
        if theta_cell is not None:
            self.log_theta_cell.copy_(torch.log(theta_cell).to(self.log_theta_cell))

    # ---------------------------------------------------------------- encoder
    def conditions(self, cond: torch.Tensor, batch_id: torch.Tensor) -> torch.Tensor | None:
        if not self.cond_dim:
            return None
        return torch.cat([cond, self.batch_emb(batch_id)], dim=-1)

    def encoder_input(self, x_in: torch.Tensor) -> torch.Tensor:
        """The columns of ``x_in`` (all genes) that the encoder reads (``ModelConfig.input_genes``)."""
        return x_in if self.n_input == self.n_genes else x_in.index_select(1, self.input_idx)

    def masked_input(self, x_in: torch.Tensor, masked: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
        """Eq. 4: masked nodes get the mask token plus N(0, noise^2) noise (on the encoder's input genes)."""
        x_in = self.encoder_input(x_in)
        if not bool(masked.any()):
            return x_in
        m = self.mask_token.to(x_in.dtype).expand(int(masked.sum()), -1)
        if noise > 0:
            m = m + noise * torch.randn_like(m)
        x = x_in.clone()
        x[masked] = m
        return x

    def encode(self, batch: Batch, *, noise: float = 0.0, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pre-quantisation latents of the seeds: (B, latent), and the condition vector.

        ``raw=True`` returns the latents before centring (used to calibrate it).
        """
        # = enc_mlp(masked_input(...)) without the first layer's input gradient (nn/mlp.py)
        h_all = mlp_masked_rows(self.enc_mlp, self.encoder_input(batch.x_in), batch.masked, self.mask_token, noise)
        h = self.sage((h_all, h_all[batch.seed_local]), batch.edge_index)
        c = self.conditions(batch.cond, batch.batch_id)
        if self.enc_film is not None:
            h = self.enc_film(h, c)
        return (h if raw else self.centre(h)), c

    # ---------------------------------------------------------------- decoders
    def both_probs(self, z: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(microenvironment, cell) gene proportions: two (B, g) tensors."""
        h = self.decoder.trunk(z, c)
        return torch.softmax(self.decoder.out(h), -1), torch.softmax(self.decoder.out_cell(h), -1)

    def code_logits(self, h: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Masked-code head: (B, latent) latents -> (B, H, K) logits of each head's observed code.

        ``context`` (B, H * K): the observed neighbours' code shares
        (:func:`napari_squint.train.code_head.code_shares`), read only by a head built with
        ``ModelConfig.code_head_context`` (None: no observed neighbour, zeros).
        """
        heads, size = self.codebook.heads, self.codebook.codebook_size
        if self.cfg.code_head_context:
            if context is None:
                context = h.new_zeros(h.shape[0], heads * size)
            h = torch.cat([h, context.to(h)], dim=-1)
        return self.code_head(h).reshape(h.shape[0], heads, size)

    def edge_logits(self, z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        e = self.adj(z)
        return (e[pairs[0]] * e[pairs[1]]).sum(-1)

    # ------------------------------------------------------------------ losses
    def forward(self, batch: Batch, *, noise: float = 0.0, masked_weight: float = 1.0):
        """Encode, quantise and decode a batch; return the latents, codes and losses.

        ``masked_weight`` multiplies the attribute losses of masked seeds (1 = the
        paper's plain mean over all cells).
        """
        h, c = self.encode(batch, noise=noise)
        q, codes, vq = self.codebook(h)
        out = {"latent": h, "quantised": q, "codes": codes, **vq}
        if batch.x_nbr is not None:
            probs, probs_cell = self.both_probs(q, c)
            with torch.autocast(device_type=q.device.type, enabled=False):  # likelihoods in float32
                probs, probs_cell = probs.float(), probs_cell.float()
                lib = batch.x_nbr.sum(-1, keepdim=True)
                w = None  # all weights 1: the weighted mean is the plain mean (no (B, g) product)
                if masked_weight != 1.0:
                    w = torch.where(batch.masked[batch.seed_local], masked_weight, 1.0).to(q.device)
                    w = (w / w.mean())[:, None]
                out["nb_loss"] = _nb_loss(batch.x_nbr, probs * lib, self.log_theta.float().exp(), w, batch.lfact_nbr)
                if batch.x_cell is not None:
                    lib_c = batch.x_cell.sum(-1, keepdim=True)
                    out["nb_cell_loss"] = _nb_loss(batch.x_cell, probs_cell * lib_c, self.log_theta_cell.float().exp(),
                                                   w, batch.lfact_cell)
        if batch.pos_edges is not None and batch.pos_edges.shape[1] > 0:
            # one pass of the edge MLP and one gather for positive and negative pairs together
            n_pos = batch.pos_edges.shape[1]
            logits = self.edge_logits(q, torch.cat([batch.pos_edges, batch.neg_edges], dim=1)).float()
            pos, neg = logits[:n_pos], logits[n_pos:]
            target = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
            out["adj_loss"] = F.binary_cross_entropy_with_logits(logits, target)
        out["mask_norm"] = (self.mask_token**2).sum()
        return out
