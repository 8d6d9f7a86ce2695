"""Fit the masked-code head after training, with the encoder frozen.

The head (``SquintModule.code_head``) maps the latent of a *masked* cell to a
distribution, per codebook head, over the code the same cell gets when its
counts are shown to the model. In-painting decodes a mixture of (or draws)
tokens from it, instead of the nearest code of a latent computed from the mask
token (:meth:`napari_squint.api.squint.Squint.impute_cells`).

It is fitted as a probe once training has ended: the encoder, the centring
and the codebook no longer change, so the targets (every cell's observed
codes, one unmasked pass) stay valid, and the cost is a few forward passes of
the encoder (no decoder, no likelihood). Letting its loss reach the encoder
during training was measured to lower per-gene PC of in-painting
(docs/imputation.md). The same pass records the tokens training cells use
(``token_codes``, ``token_counts``): the support the head's mixture is
restricted to.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from napari_squint.data.batch import chunks, make_batch
from napari_squint.data.prepare import PreparedSlide
from napari_squint.config import TrainConfig
from napari_squint.train.events import ProgressEvent

__all__ = ["code_shares", "disc_mask", "iter_fit_code_head", "observed_codes", "with_observed_context"]


def code_shares(nbr: np.ndarray, codes: np.ndarray, usable: np.ndarray, codebook_size: int) -> np.ndarray:
    """What the masked-code head reads of a cell's observed neighbours (``ModelConfig.code_head_context``).

    Parameters
    ----------
    nbr
        (B, w) neighbour rows (indices into ``codes``; -1 pads).
    codes
        (n, H) observed codes of every cell (-1: unknown).
    usable
        (n,) bool: cells whose code may be read (observed, not masked).
    codebook_size
        Codes per head (K).

    Returns
    -------
    (B, H * K) float32: per head, the share of the usable neighbours holding each code (rows of zeros for a
    cell with none).
    """
    nbr = np.asarray(nbr, dtype=np.int64)
    heads = codes.shape[1]
    safe = np.maximum(nbr, 0)
    ok = (nbr >= 0) & usable[safe] & (codes[safe, 0] >= 0)
    out = np.zeros((nbr.shape[0], heads, codebook_size), dtype=np.float32)
    rows, cols = np.nonzero(ok)
    if rows.size:
        c = codes[nbr[rows, cols]]  # (m, H)
        for j in range(heads):
            np.add.at(out[:, j], (rows, c[:, j]), 1.0)
        out /= np.maximum(ok.sum(1), 1)[:, None, None]
    return out.reshape(nbr.shape[0], heads * codebook_size)



@torch.no_grad()
def observed_codes(module, data: PreparedSlide, cells: np.ndarray, device, *, batch_size: int = 8192) -> np.ndarray:
    """Codes of ``cells`` with every input observed (eval mode): (n, H) int64."""
    module.eval()
    out = []
    for idx in chunks(cells.size, batch_size):
        h, _ = module.encode(make_batch(data, cells[idx], targets=False).to(device))
        out.append(module.codebook.assign(h).cpu())
    return torch.cat(out).numpy()


def disc_mask(data: PreparedSlide, cells: np.ndarray, rng: np.random.Generator, *, fraction: float,
              sizes: tuple[int, int] = (20, 400)) -> np.ndarray:
    """Contiguous holes: discs (the ``m`` cells nearest a random cell of ``cells``, ``m`` drawn in ``sizes``)
    until about ``fraction`` of ``cells`` is covered; (n,) bool over all cells of ``data``."""
    from scipy.spatial import cKDTree

    masked = np.zeros(data.n_cells, dtype=bool)
    goal = max(1, int(round(fraction * cells.size)))
    trees = {}
    while masked[cells].sum() < goal:
        centre = int(rng.choice(cells))
        b = int(data.batch[centre])
        if b not in trees:
            pool = cells[data.batch[cells] == b]
            trees[b] = (pool, cKDTree(data.coords[pool]))
        pool, tree = trees[b]
        m = int(min(rng.integers(sizes[0], sizes[1] + 1), max(1, pool.size - 1)))
        _, nn = tree.query(data.coords[centre], k=m)
        masked[pool[np.atleast_1d(nn)]] = True
    return masked


def with_observed_context(data: PreparedSlide, masked: np.ndarray, *, k: int) -> PreparedSlide:
    """A copy of ``data`` whose masked cells have, as graph neighbours, their ``k`` nearest unmasked cells of
    the same section (what in-painting with ``method="context"`` shows the model)."""
    import copy

    from scipy.spatial import cKDTree

    nbr = data.nbr.copy()
    width = nbr.shape[1]
    kk = min(k, width)
    for b in np.unique(data.batch[masked]):
        rows = np.flatnonzero(masked & (data.batch == b))
        pool = np.flatnonzero(~masked & (data.batch == b))
        nbr[rows] = -1
        if pool.size == 0:
            continue
        m = min(kk, pool.size)
        _, nn = cKDTree(data.coords[pool]).query(data.coords[rows], k=m)
        nbr[rows, :m] = pool[np.asarray(nn).reshape(rows.size, m)]
    out = copy.copy(data)
    out.nbr = nbr
    return out


def iter_fit_code_head(module, data: PreparedSlide, cells: np.ndarray, cfg: TrainConfig, device,
                       *, batch_size: int = 2048, context_k: int = 8):
    """Record the training tokens and fit the masked-code head; yields :class:`ProgressEvent`.

    Each pass masks a random fraction of the cells, drawn in
    ``[cfg.mask_start, cfg.mask_end]`` (the training schedule's range), and
    minimises the cross-entropy of the head's per-head logits on the masked
    cells against their observed codes. With ``cfg.code_head_contexts``
    every second pass is test-like instead: contiguous holes
    (:func:`disc_mask`, 10-30% of the cells in discs of 20-400 cells) whose
    cells read their ``context_k`` nearest observed cells
    (:func:`with_observed_context`), as ``method="context"`` in-painting
    shows them; there are then twice ``cfg.code_head_epochs`` passes. A head built with
    ``ModelConfig.code_head_context`` also reads, for each masked cell, the observed codes of its unmasked
    neighbours (:func:`code_shares`). Returns the last pass's mean
    cross-entropy and per-head accuracy (``None`` when the model has no head).
    """
    cells = np.asarray(cells, dtype=np.int64)
    codes = observed_codes(module, data, cells, device)
    uniq, counts = np.unique(codes, axis=0, return_counts=True)
    module.token_codes = torch.as_tensor(uniq, dtype=torch.long, device=device)
    module.token_counts = torch.as_tensor(counts, dtype=torch.float32, device=device)
    if module.code_head is None or cfg.code_head_epochs <= 0:
        return None
    target = np.full((data.n_cells, codes.shape[1]), -1, dtype=np.int64)
    target[cells] = codes
    target_t = torch.as_tensor(target)
    rng = np.random.default_rng(cfg.seed + 3)
    opt = torch.optim.AdamW(module.code_head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    module.eval()  # the encoder (and its centring) stay as trained
    module.code_head.train()
    record = None
    contexts = cfg.code_head_contexts
    use_context = bool(module.cfg.code_head_context)
    size = module.codebook.codebook_size
    n_passes = cfg.code_head_epochs * (2 if contexts else 1)
    for epoch in range(n_passes):
        source = data
        if contexts and epoch % 2 == 1:  # test-like: contiguous holes, each cell reading its nearest observed cells
            masked = disc_mask(data, cells, rng, fraction=float(rng.uniform(0.1, 0.3)))
            source = with_observed_context(data, masked, k=context_k)
            frac = float(masked.mean())
        else:
            frac = float(rng.uniform(cfg.mask_start, cfg.mask_end))
            masked = rng.random(data.n_cells) < frac
        order = rng.permutation(cells)
        ce_sum, acc_sum, n_sum = 0.0, 0.0, 0
        for idx in chunks(order.size, batch_size):
            seeds = order[idx][masked[order[idx]]]
            if seeds.size == 0:
                continue
            b = make_batch(source, seeds, masked=masked, targets=False).to(device)
            with torch.no_grad():
                h, _ = module.encode(b)
            ctx = None
            if use_context:  # the observed codes of its unmasked neighbours (every cell was coded observed)
                ctx = torch.as_tensor(code_shares(source.nbr[seeds], target, ~masked, size), device=device)
            logits = module.code_logits(h, ctx).float()
            y = target_t[seeds].to(device)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ce_sum += float(loss.detach()) * seeds.size
            acc_sum += float((logits.argmax(-1) == y).float().mean()) * seeds.size
            n_sum += seeds.size
        record = {"code_head_ce": ce_sum / max(n_sum, 1), "code_head_accuracy": acc_sum / max(n_sum, 1),
                  "mask_fraction": frac}
        yield ProgressEvent("code_head", step=epoch + 1, total=n_passes,
                            message=f"masked-code head {epoch + 1}/{n_passes}", metrics=record)
    module.code_head.eval()
    return record
