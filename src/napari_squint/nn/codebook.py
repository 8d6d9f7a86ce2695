"""Multi-head cosine codebook with k-means initialisation and EMA updates.

Each of ``heads`` slices of the latent vector is L2-normalised and assigned to
the code of highest cosine similarity in that head's own codebook of
``codebook_size`` unit vectors. A cell's token combines the head codes in a
fixed mixed radix (``token = sum_h code_h * K**(heads-1-h)``), so token ids
mean the same thing on every slide a model is applied to.

Codes are not trained by gradient: they follow an exponential moving average
(decay 0.8 in the paper) of the normalised latents assigned to them, and codes
left unused are re-seeded from the current batch. Gradients reach the encoder
through the straight-through estimator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over data-parallel ranks (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def kmeanspp_seeds(x: torch.Tensor, k: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """k-means++ seeding with the cosine distance ``1 - cos``: (N, d) unit vectors -> (k, d)."""
    n = x.shape[0]
    first = int(torch.randint(0, n, (1,), generator=generator))
    centres = [x[first]]
    d = (1 - x @ x[first]).clamp(min=0)
    for _ in range(1, k):
        w = d**2
        if float(w.sum()) <= 0:  # fewer distinct points than codes: jitter a random point
            j = int(torch.randint(0, n, (1,), generator=generator))
            noise = torch.randn(x.shape[1], generator=generator).to(x)
            c = F.normalize(x[j] + 0.01 * noise, dim=-1)
        else:
            j = int(torch.multinomial(w.cpu().double(), 1, generator=generator))
            c = x[j]
        centres.append(c)
        d = torch.minimum(d, (1 - x @ c).clamp(min=0))
    return torch.stack(centres).clone()


def spherical_kmeans(x: torch.Tensor, k: int, *, iters: int = 20, generator: torch.Generator | None = None,
                     reduce: bool = True) -> torch.Tensor:
    """k-means on the unit sphere (cosine similarity).

    Parameters
    ----------
    x
        (N, d) unit vectors.
    k
        Number of centres.
    reduce
        Sum the cluster statistics over data-parallel ranks, so every rank ends
        with the same centres (the initial centres are broadcast from rank 0).

    Returns
    -------
    (k, d) unit-norm centres.
    """
    centres = kmeanspp_seeds(x, k, generator=generator)
    import torch.distributed as dist

    if reduce and dist.is_available() and dist.is_initialized():
        dist.broadcast(centres, src=0)
    for _ in range(iters):
        assign = (x @ centres.T).argmax(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        if reduce:
            sums, counts = _all_reduce(sums), _all_reduce(counts)
        empty = counts == 0
        centres = torch.where(empty[:, None], centres, F.normalize(sums, dim=-1))
    return centres


class CosineCodebook(nn.Module):
    """Multi-head cosine vector quantiser.

    Parameters
    ----------
    dim
        Latent width; must be divisible by ``heads``.
    codebook_size
        Codes per head (K).
    heads
        Number of heads (H); the token vocabulary has ``K**H`` entries.
    decay
        EMA decay of the code statistics.
    dead_threshold
        A code whose EMA usage falls below this many cells per batch is re-seeded.

    Shapes
    ------
    ``forward(h)``: h (B, dim) -> quantised (B, dim) with straight-through
    gradients, codes (B, H) int64, and a dict of losses and statistics.
    """

    def __init__(self, dim: int, codebook_size: int, *, heads: int = 1, decay: float = 0.8,
                 dead_threshold: float = 0.5, eps: float = 1e-6):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"latent dim {dim} is not divisible by heads={heads}")
        if codebook_size < 2:
            raise ValueError(f"codebook_size={codebook_size} must be >= 2")
        self.dim, self.codebook_size, self.heads = dim, codebook_size, heads
        self.head_dim = dim // heads
        self.decay, self.dead_threshold, self.eps = decay, dead_threshold, eps
        self.register_buffer("embed", F.normalize(torch.randn(heads, codebook_size, self.head_dim), dim=-1))
        self.register_buffer("embed_sum", self.embed.clone())
        self.register_buffer("cluster_size", torch.ones(heads, codebook_size))
        self.register_buffer("initted", torch.tensor(False))

    # ------------------------------------------------------------------ helpers
    def split(self, h: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (B, H, dh) unit vectors per head."""
        return F.normalize(h.reshape(h.shape[0], self.heads, self.head_dim), dim=-1)

    def assign(self, h: torch.Tensor) -> torch.Tensor:
        """Nearest code per head (highest cosine similarity): (B, dim) -> (B, H)."""
        hn = self.split(h)
        sim = torch.einsum("bhd,hkd->bhk", hn, self.embed.to(hn.dtype))
        return sim.argmax(dim=-1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors of (B, H) codes, concatenated: (B, dim)."""
        heads = torch.arange(self.heads, device=codes.device)[None, :].expand_as(codes)
        return self.embed[heads, codes].reshape(codes.shape[0], self.dim)

    def tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """Mixed-radix token id of (B, H) codes: (B,)."""
        radix = self.codebook_size ** torch.arange(self.heads - 1, -1, -1, device=codes.device)
        return (codes * radix).sum(-1)

    def codes_from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`tokens`: (B,) -> (B, H)."""
        out = []
        t = tokens.clone()
        for _ in range(self.heads):
            out.append(t % self.codebook_size)
            t = t // self.codebook_size
        return torch.stack(out[::-1], dim=-1)

    @property
    def vocabulary_size(self) -> int:
        return self.codebook_size**self.heads

    # ------------------------------------------------------------- init & EMA
    @torch.no_grad()
    def init_kmeans(self, h: torch.Tensor, *, iters: int = 20, seed: int = 0) -> None:
        """Initialise every head's codes by spherical k-means on latents ``h`` (N, dim)."""
        g = torch.Generator().manual_seed(seed)
        hn = self.split(h)
        for head in range(self.heads):
            self.embed[head] = spherical_kmeans(hn[:, head].contiguous(), self.codebook_size, iters=iters, generator=g)
        self.embed_sum.copy_(self.embed)
        self.cluster_size.fill_(1.0)
        self.initted.fill_(True)

    @torch.no_grad()
    def ema_update(self, hn: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA of code usage and of the (normalised) latents assigned to each code."""
        onehot = F.one_hot(codes, self.codebook_size).to(hn.dtype)  # (B, H, K)
        counts = _all_reduce(onehot.sum(0))  # (H, K)
        sums = _all_reduce(torch.einsum("bhk,bhd->hkd", onehot, hn))
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.embed.copy_(F.normalize(self.embed_sum, dim=-1))

    @torch.no_grad()
    def reseed_dead(self, hn: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Replace codes whose usage fell below ``dead_threshold`` by random batch latents."""
        dead = self.cluster_size < self.dead_threshold  # (H, K)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        b = hn.shape[0]
        pick = torch.randint(0, b, (self.heads, self.codebook_size), generator=generator, device="cpu").to(hn.device)
        heads = torch.arange(self.heads, device=hn.device)[:, None].expand_as(pick)
        new = hn[pick, heads]  # (H, K, dh)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.broadcast(new, src=0)
        self.embed.copy_(torch.where(dead[..., None], new, self.embed))
        self.embed_sum.copy_(torch.where(dead[..., None], new, self.embed_sum))
        self.cluster_size.copy_(torch.where(dead, torch.ones_like(self.cluster_size), self.cluster_size))
        return n_dead

    # ----------------------------------------------------------------- forward
    def forward(self, h: torch.Tensor, *, update: bool | None = None):
        """Quantise ``h`` (B, dim).

        Returns
        -------
        quantised
            (B, dim) code vectors with straight-through gradients to ``h``.
        codes
            (B, H) code index per head.
        out
            ``code_loss`` (codebook towards sg[latent]), ``commit_loss``
            (latent towards sg[code]), ``perplexity`` and ``utilisation`` (fraction of codes used in the batch, averaged over heads).
        """
        update = self.training if update is None else update
        hn = self.split(h)  # (B, H, dh)
        sim = torch.einsum("bhd,hkd->bhk", hn, self.embed.to(hn.dtype))
        codes = sim.argmax(dim=-1)
        heads = torch.arange(self.heads, device=h.device)[None, :].expand_as(codes)
        q = self.embed[heads, codes].to(hn.dtype)  # (B, H, dh)
        code_loss = F.mse_loss(q, hn.detach())
        commit_loss = F.mse_loss(hn, q.detach())
        if update:
            self.ema_update(hn.detach(), codes)
        q_st = hn + (q - hn).detach()
        with torch.no_grad():
            probs = F.one_hot(codes, self.codebook_size).float().mean(0)  # (H, K)
            ent = -(probs * torch.log(probs + 1e-10)).sum(-1)
            perplexity = ent.exp().mean()
            utilisation = (probs > 0).float().mean()
        return q_st.reshape(h.shape[0], self.dim), codes, {
            "code_loss": code_loss, "commit_loss": commit_loss,
            "perplexity": perplexity, "utilisation": utilisation,
        }

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(dim={self.dim}, codebook_size={self.codebook_size}, "
                f"heads={self.heads}, decay={self.decay})")
