"""SQuINT's in-painting engine: local passes of the mask token, token mixtures, log-space counts, residuals.

Each pass works on the targets and their 1-hop neighbours only (a small
:class:`~napari_squint.data.prepare.PreparedSlide`), so a 5,000-cell polygon
on a 50,000-cell slide takes a fraction of a second on a CPU. The methods
(``context``, ``oneshot``, ``infill``) and draws are described in
:mod:`napari_squint.tasks.impute`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from napari_squint.api.impute_engine import ImputeEngine, TargetSet
from napari_squint.api.squint_residual import clean_cells, microenvironment_residuals
from napari_squint.data.imputation import hops_to_observed, log_normalise_rows
from napari_squint.data.prepare import PreparedSlide
from napari_squint.data.validate import SlideError
from napari_squint.nn.log_estimate import log_space_counts, log_space_counts_from_moments
from napari_squint.nn.nb import sample_nb

__all__ = ["SquintImputeEngine", "widen_spread"]


def widen_spread(counts: np.ndarray, library: np.ndarray, spread: float, *, weight: np.ndarray | None = None,
                 target_sum: float = 1e4) -> np.ndarray:
    """Widen the spread of imputed profiles around their mean, gene by gene, in log-normalised space.

    ``y = log1p(target_sum * counts / library)`` becomes ``y + w (spread - 1) (y - mean(y))`` (the mean over the
    rows, i.e. the cells imputed together; ``w`` = ``weight`` (m,), default 1), floored at 0, and is turned back
    into counts on the same ``library`` (m,). ``spread=1`` returns ``counts`` unchanged. A per-gene affine map
    of the log profiles leaves each gene's correlation with the truth unchanged (up to the floor); it undoes
    the shrinkage of a conditional expectation towards the mean.
    """
    if spread == 1.0 or counts.shape[0] < 2:
        return counts
    lib = np.maximum(np.asarray(library, dtype=np.float64), 1e-12)[:, None]
    y = np.log1p(counts * (target_sum / lib))
    w = 1.0 if weight is None else np.asarray(weight, dtype=np.float64)[:, None]
    y = np.maximum(y + w * (spread - 1.0) * (y - y.mean(axis=0)), 0.0)
    return np.expm1(y) * (lib / target_sum)


class SquintImputeEngine(ImputeEngine):
    """In-painting with a :class:`~napari_squint.api.squint.Squint` model (see :class:`ImputeEngine`)."""

    def __init__(self, model, data: PreparedSlide, section_labels: np.ndarray):
        super().__init__(model, data, section_labels)
        # residuals of measured cells, computed on demand and cached (they never read a target)
        self._resid: np.ndarray | None = None
        self._resid_done: np.ndarray | None = None
        self._pass: tuple | None = None  # (TargetSet, pass settings, arrays) of the last model pass

    # ------------------------------------------------------------------ passes
    def _mini(self, rows: np.ndarray, xin: np.ndarray, nbr: np.ndarray, cond: np.ndarray,
              batch: np.ndarray) -> PreparedSlide:
        """A PreparedSlide of the local rows ``rows`` (neighbours remapped, -1 outside)."""
        pos = np.full(xin.shape[0], -1, dtype=np.int64)
        pos[rows] = np.arange(rows.size)
        nb = nbr[rows]
        nb = np.where(nb >= 0, pos[np.maximum(nb, 0)], -1)
        empty = sp.csr_matrix((rows.size, xin.shape[1]), dtype=np.float32)
        d = self.data
        return PreparedSlide(
            counts=empty, x_in=sp.csr_matrix(xin[rows]), nbr=nb, x_nbr=empty, cond=cond[rows], batch=batch[rows],
            tile=np.zeros(rows.size, dtype=np.int64), coords=np.zeros((rows.size, 2)),
            obs_names=pd.RangeIndex(rows.size), genes=d.genes, sections=d.sections, scales=d.scales,
        )

    def _step(self, seeds, xin, nbr, cond, batch, masked, est, *, draw: str, seed: int,
              codes: np.ndarray | None = None) -> dict:
        """Impute the local ``seeds`` given the current inputs and mask (``codes``: local rows' observed codes)."""
        nb = nbr[seeds]
        rows = np.unique(np.concatenate([seeds, nb[nb >= 0]]))
        mini = self._mini(rows, xin, nbr, cond, batch)
        cells = np.searchsorted(rows, seeds)
        extra = {}  # only what differs from impute_cells' defaults
        if self.model.config.model.token_mixture != 1:
            extra["top"] = self.model.config.model.token_mixture
        if codes is not None:
            extra["context_codes"] = codes[rows]
        return self.model.impute_cells(mini, masked[rows], cells=cells, library=est[rows], draw=draw, seed=seed,
                                       **extra)

    def _observed_codes(self, local: np.ndarray, observed: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
        """Codes of the local ``observed`` rows (global ids ``local``), each encoded from its measured graph row
        with the targets masked; None unless the masked-code head reads its neighbours' codes."""
        module = self.model.module
        if not (self.model.has_code_head and module.cfg.code_head_context):
            return None
        out = np.full((local.size, module.codebook.heads), -1, dtype=np.int64)
        rows = np.flatnonzero(observed)
        if rows.size:
            out[rows] = self.model.encode(self.data, masked=targets, cells=local[rows])["codes"]
        return out

    def _observed_context(self, ts: TargetSet, *, k: int, width: int) -> np.ndarray:
        """Each target's ``k`` nearest observed cells of its section, as a padded (t, width) neighbour table."""
        d = self.data
        out = np.full((ts.cells.size, width), -1, dtype=np.int64)
        observed = ~ts.target_mask
        kk = min(k, width)
        sections = ts.sections.astype(str)
        for s in np.unique(sections):
            rows = np.flatnonzero(sections == s)
            pool = np.flatnonzero(observed & self.in_section(s))
            if pool.size == 0:
                raise SlideError(f"section {s!r} has no observed cell left to impute from")
            m = min(kk, pool.size)
            _, nn = self.observed_tree(s, pool).query(ts.xy[rows], k=m, workers=-1)
            out[rows, :m] = pool[np.asarray(nn).reshape(rows.size, m)]
        return out

    # ------------------------------------------------------------------ impute
    def impute(self, ts: TargetSet, *, method: str, draw: str, residual: bool, nbr_mode: str, substitute: str,
               seed: int) -> dict:
        d = self.data
        n, g = d.n_cells, d.n_genes
        k = self.model.config.graph.k
        all_t = ts.cells
        if method == "context":  # the model reads each target's nearest observed cells instead of its graph row
            m_nbr = self._observed_context(ts, k=k, width=d.nbr.shape[1])
        else:
            m_nbr = ts.nbr
        local = np.unique(np.concatenate([all_t, m_nbr[m_nbr >= 0]]))
        u = local.size
        pos_t = np.searchsorted(local, all_t)
        is_target = np.zeros(u, dtype=bool)
        is_target[pos_t] = True
        exist = local < n
        ex = local[exist]
        # ---- local work arrays ----
        nbr = np.full((u, d.nbr.shape[1]), -1, dtype=np.int64)
        nbr[pos_t] = np.where(m_nbr >= 0, np.searchsorted(local, np.maximum(m_nbr, 0)), -1)
        cond = np.zeros((u, d.cond.shape[1]), dtype=np.float32)
        batch = np.zeros(u, dtype=np.int64)
        cond[exist], batch[exist] = d.cond[ex], d.batch[ex]
        if ts.n_created:
            cond[~exist] = ts.created_cond
            batch[~exist] = ts.created_batch
        xin = np.zeros((u, g), dtype=np.float32)
        xin[exist] = d.x_in[ex].toarray()
        xin[is_target] = 0.0  # targets' measured inputs are never read
        # read depth: measured for observed cells, the section median of observed cells for targets
        est = np.zeros(u)
        est[exist] = self.library[ex]
        est[pos_t] = ts.depth
        masked = is_target.copy()
        codes = self._observed_codes(local, exist & ~is_target, ts.target_mask)
        # ---- impute ----
        tt = all_t.size
        imputed, imputed_nbr = np.zeros((tt, g)), np.zeros((tt, g))
        tokens = np.zeros(tt, dtype=np.int64)
        if method in ("oneshot", "context"):
            rings = np.zeros(tt, dtype=np.int64)
            order = [np.arange(tt)]
        else:
            r, c = np.nonzero(nbr >= 0)
            reads = sp.csr_matrix((np.ones(r.size), (r, nbr[r, c])), shape=(u, u))
            rings = hops_to_observed(pos_t, reads, ~is_target)
            order = [np.flatnonzero(rings == r) for r in np.unique(rings)]
        rng = np.random.default_rng(seed)
        log = draw == "logmean"  # the steps give expected counts and their moments; converted once at the end
        if log:
            var, probs_nbr, lib_nbr = np.zeros((tt, g)), np.zeros((tt, g)), np.zeros(tt)
        # the model's pass does not depend on the output settings (residual_weight, spread): the same TargetSet
        # imputed again with the same pass settings (calibration, api/squint_calibrate.py) reuses it
        key = (method, draw, substitute, seed, self.model.config.model.token_mixture,
               self.model.config.model.token_temperature)
        cached = self._pass is not None and self._pass[0] is ts and self._pass[1] == key
        if cached:
            imputed, imputed_nbr, tokens = (a.copy() for a in self._pass[2][:3])
            if log:
                var, probs_nbr, lib_nbr = self._pass[2][3:]
            order = []
        for step, sel in enumerate(order):
            res = self._step(pos_t[sel], xin, nbr, cond, batch, masked, est, draw="mean" if log else draw,
                             seed=seed + step, codes=codes)
            imputed[sel], imputed_nbr[sel], tokens[sel] = res["imputed"], res["imputed_nbr"], res["tokens"]
            if log:
                var[sel], probs_nbr[sel], lib_nbr[sel] = res["var"], res["probs_nbr"], res["library_nbr"]
            if method == "infill":
                x_sub = res["imputed"]  # expected (or, with draw="sample", generated) counts
                if substitute == "sample" and draw != "sample":  # draw="sample" already gives generated counts
                    x_sub = sample_nb(x_sub, self.model.dispersions()[0], rng)
                xin[pos_t[sel]] = log_normalise_rows(x_sub)
                masked[pos_t[sel]] = False
        if not cached:
            self._pass = (ts, key, (imputed.copy(), imputed_nbr.copy(), tokens.copy())
                          + ((var, probs_nbr, lib_nbr) if log else ()))
        if log:
            theta_n = self.model.dispersions()[1]
            cfg = self.model.config.model
            shift = None
            if residual:
                shift = self.local_correction(ts.xy, ts.sections.astype(str), ts.target_mask)
                shift *= cfg.residual_weight
            imputed = widen_spread(log_space_counts_from_moments(imputed, var, est[pos_t], shift=shift), est[pos_t],
                                   cfg.spread)
            if nbr_mode == "sum":
                imputed_nbr = self._nbr_sum_log(ts, probs_nbr, est[pos_t], theta_n, shift=shift, spread=cfg.spread)
            else:
                imputed_nbr = widen_spread(log_space_counts(probs_nbr * lib_nbr[:, None], theta_n, lib_nbr,
                                                            shift=shift), lib_nbr, cfg.spread)
        elif nbr_mode == "sum":
            imputed_nbr = self.nbr_sum(ts, imputed)
        return {"imputed": imputed, "imputed_nbr": imputed_nbr, "tokens": tokens, "rings": rings}

    def _nbr_sum_log(self, ts: TargetSet, probs_nbr, library, theta_n, *, shift: np.ndarray | None = None,
                     spread: float = 1.0):
        """``draw="logmean"`` microenvironments: measured counts of observed members plus, for the target
        members, the model's expected log-normalised expression.

        The target members' counts are one negative binomial per gene: the mean is the decoder's
        microenvironment profile (``probs_nbr``, the token mixture's) times the summed read depth of the
        target members (``library``), the dispersion is the decoder's; the measured members are a known
        offset (see :func:`napari_squint.nn.log_estimate.log_space_counts`). ``shift`` (t, g), the local
        residual correction, and the widening of :func:`widen_spread` are weighted by the target members' share
        of the read depth.
        """
        a_meas, a_imp = self.members(ts)
        offset = (a_meas @ self.data.counts).toarray().astype(np.float64)
        depth = a_imp @ np.asarray(library, dtype=np.float64)
        total = offset.sum(1) + depth
        share = depth / np.maximum(total, 1e-12)
        if shift is not None:
            shift = shift * share[:, None]
        out = log_space_counts(probs_nbr * depth[:, None], theta_n, total, offset, shift=shift)
        return np.maximum(widen_spread(out, total, spread, weight=share), offset)

    def local_correction(self, xy: np.ndarray, sections: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The local residual correction (:mod:`napari_squint.api.squint_residual`) at points ``xy`` (t, 2).

        For each point, the mean residual of the ``k`` (the model's graph
        ``k``) nearest measured cells of its section (``sections`` (t,)) whose
        microenvironment holds no target (``targets`` (n,) bool). Residuals
        do not depend on the targets, so each cell's is computed once and
        cached. Returns float64 (t, g); zero rows for a section with no such
        cell.
        """
        d = self.data
        k = self.model.config.model.residual_k or self.model.config.graph.k
        out = np.zeros((len(xy), d.n_genes))
        if self._resid is None:
            self._resid = np.zeros((d.n_cells, d.n_genes), dtype=np.float32)
            self._resid_done = np.zeros(d.n_cells, dtype=bool)
        clean = clean_cells(d.nbr, targets)
        for s in np.unique(sections):
            rows = np.flatnonzero(sections == s)
            pool = np.flatnonzero(clean & self.in_section(s))
            if pool.size == 0:
                continue
            _, idx = self.observed_tree(s, pool).query(np.asarray(xy[rows], dtype=np.float64), k=min(k, pool.size),
                                                       workers=-1)
            cells = pool[np.asarray(idx).reshape(rows.size, -1)]
            todo = np.unique(cells[~self._resid_done[cells]])
            if todo.size:
                self._resid[todo] = microenvironment_residuals(self.model, d, todo)
                self._resid_done[todo] = True
            out[rows] = self._resid[cells].mean(axis=1)
        return out
