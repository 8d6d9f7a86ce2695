"""Expression of the synthetic tissue: gene programmes and negative-binomial counts (used by
:func:`napari_squint.data.synthetic.make_tissue`).

Counts are drawn chunk by chunk in bounded memory: means above ``_MU_SWITCH``
gamma-Poisson, the rest from the exact negative-binomial distribution by CDF
inversion, which is faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

_NEIGHBOUR_BETA = 3.0  # log fold change of the neighbour programme at f = 1
_CHUNK_ENTRIES = 1 << 22  # cells x genes per expression chunk (16 MB float32)
_MU_SWITCH = 5.0  # means above this are drawn gamma-Poisson, below by CDF inversion


@dataclass(frozen=True)
class _Programme:
    """Gene programmes: per-type weights, gene sets and dispersions."""

    weights: np.ndarray  # (n_types, n_genes) float32 exp(base log-mean)
    theta: np.ndarray  # (n_genes,) gamma shape (inverse dispersion)
    markers: list[np.ndarray]  # per type, marker gene indices
    nbr_genes: np.ndarray  # neighbour-programme gene indices
    niche_genes: np.ndarray  # activation-programme gene indices
    niche_weight: np.ndarray  # (n_niche,) float32 exp(log-mean) of activated cells
    top_gene: np.ndarray  # (n_types,) most expressed gene per type


def _programme(rng: np.random.Generator, n_genes: int, n_types: int) -> _Programme:
    n_markers = int(np.clip(n_genes // (4 * n_types), 2, 10))
    n_prog = int(np.clip(n_genes // 20, 3, 20))
    perm = rng.permutation(n_genes)
    markers = [np.sort(perm[t * n_markers : (t + 1) * n_markers]) for t in range(n_types)]
    start = n_types * n_markers
    nbr_genes = np.sort(perm[start : start + n_prog])
    niche_genes = np.sort(perm[start + n_prog : start + 2 * n_prog])

    log_base = rng.normal(0.0, 1.2, size=n_genes)
    log_base[np.concatenate(markers)] = rng.normal(-1.5, 0.5, size=start)
    log_base[nbr_genes] = rng.normal(0.0, 0.3, size=n_prog)
    log_base[niche_genes] = -7.0  # silent outside the planted niche
    log_mean = np.tile(log_base, (n_types, 1))
    for t, m in enumerate(markers):
        log_mean[t, m] += rng.uniform(3.0, 4.0, size=len(m))
    theta = np.clip(np.exp(rng.normal(math.log(3.0), 0.6, size=n_genes)), 0.5, 50.0)
    niche_log = rng.normal(1.0, 0.3, size=n_prog)
    return _Programme(
        weights=np.exp(log_mean).astype(np.float32),
        theta=theta,
        markers=markers,
        nbr_genes=nbr_genes,
        niche_genes=niche_genes,
        niche_weight=np.exp(niche_log).astype(np.float32),
        top_gene=np.argmax(log_mean, axis=1),
    )


def _sample_counts(
    prog: _Programme,
    cell_type: np.ndarray,
    nbr_frac: np.ndarray,
    activated: np.ndarray,
    library: np.ndarray,
    seed_seq: np.random.SeedSequence,
    dtype: np.dtype,
) -> sp.csr_matrix:
    """Negative-binomial counts, generated in chunks of cells and stacked as CSR.

    Only one ``(chunk, n_genes)`` dense block exists at a time. Its non-zeros
    are appended to the CSR buffers, which grow in place (``ndarray.resize``,
    a ``realloc``), so peak memory stays close to the size of the result. Each
    chunk has its own generator spawned from ``seed_seq``.
    """
    n_cells, n_genes = len(cell_type), prog.weights.shape[1]
    chunk = max(1, _CHUNK_ENTRIES // n_genes)
    starts = range(0, n_cells, chunk)
    rngs = [np.random.default_rng(s) for s in seed_seq.spawn(len(starts))]
    nbr_boost = np.exp(_NEIGHBOUR_BETA * nbr_frac).astype(np.float32)
    data = np.empty(0, dtype=dtype)
    indices = np.empty(0, dtype=np.int32)
    row_nnz = np.empty(n_cells, dtype=np.int64)
    pos = 0
    for rng, lo in zip(rngs, starts):
        hi = min(lo + chunk, n_cells)
        types = cell_type[lo:hi]
        mu = np.take(prog.weights, types, axis=0)  # (m, n_genes) float32 weights
        mu[:, prog.nbr_genes] *= nbr_boost[lo:hi, None]
        act = np.flatnonzero(activated[lo:hi])
        if len(act):
            mu[np.ix_(act, prog.niche_genes)] = prog.niche_weight
        mu *= (library[lo:hi] / mu.sum(axis=1, dtype=np.float64)).astype(np.float32)[:, None]
        counts = _negative_binomial(rng, mu, prog.theta)
        del mu
        empty = np.flatnonzero(counts.sum(axis=1) == 0)
        counts[empty, prog.top_gene[types[empty]]] = 1
        mask = counts != 0
        flat = np.flatnonzero(mask)
        row_nnz[lo:hi] = mask.sum(axis=1)
        end = pos + len(flat)
        if end > len(data):  # grow: room for the rest at this chunk's density, + 10%
            capacity = max(end, int(end / hi * n_cells * 1.1) + 1)
            data.resize(capacity, refcheck=False)
            indices.resize(capacity, refcheck=False)
        data[pos:end] = counts.reshape(-1)[flat]
        indices[pos:end] = flat % n_genes
        pos = end
        del counts, mask, flat
    data.resize(pos, refcheck=False)
    indices.resize(pos, refcheck=False)
    idx_dtype = np.int32 if pos < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(n_cells + 1, dtype=idx_dtype)
    np.cumsum(row_nnz, out=indptr[1:])
    indices = indices.astype(idx_dtype, copy=False)
    return sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))


def _negative_binomial(rng: np.random.Generator, mu: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Draw negative-binomial counts with mean ``mu`` and shape ``theta``.

    ``x ~ Poisson(mu * G)``, ``G ~ Gamma(theta, 1 / theta)``, so
    ``Var x = mu + mu**2 / theta``. Entries with a mean above ``_MU_SWITCH`` are
    drawn exactly that way (gamma, then Poisson); the many small means, where
    most counts are zero, are drawn from the same distribution by inversion of
    its CDF, which is several times faster than a gamma and a Poisson draw each.

    Parameters
    ----------
    rng
        Random generator.
    mu
        ``(m, n_genes)`` float32 means.
    theta
        ``(n_genes,)`` gamma shapes (inverse dispersions).

    Returns
    -------
    numpy.ndarray
        ``(m, n_genes)`` int32 counts.
    """
    m, g = mu.shape
    counts = np.zeros((m, g), dtype=np.int32)
    flat_counts = counts.reshape(-1)
    u = rng.random(size=(m, g), dtype=np.float32)
    screen = mu / theta.astype(np.float32)  # float32 screen: P(x = 0) * 0.999
    np.log1p(screen, out=screen)
    screen *= -theta.astype(np.float32)
    np.exp(screen, out=screen)
    screen *= 0.999
    big = mu > _MU_SWITCH
    candidate = u >= screen
    candidate &= ~big
    del screen
    # inversion for small means, in float64: x = #{k : cdf(k) <= u}, with
    # p(k+1) = p(k) * (k + theta) / (k + 1) * mu / (mu + theta)
    idx = np.flatnonzero(candidate)
    del candidate
    th = theta[idx % g]
    mu_i = mu.reshape(-1)[idx].astype(np.float64)
    uu = u.reshape(-1)[idx].astype(np.float64)
    del u
    p = np.exp(-th * np.log1p(mu_i / th))
    q = mu_i / (mu_i + th)
    cdf = p.copy()
    cnt = np.zeros(len(idx), dtype=np.int32)
    k = 0
    while len(idx):
        cnt += uu >= cdf
        if k in (2, 5) or (k and k % 8 == 0):  # now and then, write out and drop finished entries
            done = (uu < cdf) | (p == 0)  # p underflows only far beyond any count seen
            flat_counts[idx[done]] = cnt[done]
            keep = ~done
            idx, p, cdf, uu, th, q, cnt = (a[keep] for a in (idx, p, cdf, uu, th, q, cnt))
        p *= (k + th) / (k + 1) * q
        cdf += p
        k += 1
    # gamma-Poisson for large means
    big_idx = np.flatnonzero(big)
    if len(big_idx):
        th_b = theta[big_idx % g]
        lam = mu.reshape(-1)[big_idx] * rng.standard_gamma(th_b) / th_b
        flat_counts[big_idx] = rng.poisson(lam)
    return counts
