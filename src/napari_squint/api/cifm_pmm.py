"""Predictive mean matching for CIFM's in-painting: each imputed cell is drawn from measured donor cells.

CIFM trained by (balanced) MSE predicts a conditional mean, whose spread across cells is a small fraction of real
cells' (docs/cifm.md). Predictive mean matching (Little 1988; the default imputation of numeric variables in
multiple-imputation software) turns such a point predictor into a draw from an empirical predictive distribution:

1. **Donors.** Measured cells of the targets' sections are reconstructed *masked*, with the targets masked too (the
   in-painting task itself; the cells in ``ceil(1 / mask_ratio)`` random groups, one pass each:
   :func:`napari_squint.api.cifm_residual.masked_residuals`). Each donor then has a prediction ``r_j`` made as a
   target's is, and a measured log-normalised profile ``m_j``.
2. **Matching.** A target with prediction ``p_i`` takes the ``d`` donors whose predictions are nearest to ``p_i``
   (Euclidean, in the principal components of the donors' predictions).
3. **Draw.** One of them is drawn uniformly, and its measured profile is the target's imputed profile (in log
   space; :func:`napari_squint.data.imputation.counts_from_log` scales it to the target's depth).

Where the model is sure, the donors are cells it predicts alike and the draw follows the prediction; where it is
not, the donors are many kinds of cell and the draw keeps their spread instead of their average. Every imputed
profile is a measured cell's. The donors are measured cells only, never the targets.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from napari_squint.api.cifm_residual import masked_residuals

__all__ = ["MAX_DONORS", "DonorMatcher", "donor_cells", "draw_from_donors"]


def donor_cells(section: np.ndarray, measured: np.ndarray, target_sections: np.ndarray, max_donors: int,
                seed: int = 0) -> np.ndarray:
    """Sorted indices of the donor cells: ``measured`` (n,) bool cells whose ``section`` (n,) label is among
    ``target_sections``, at most ``max_donors`` of them per section (drawn at random with ``seed``)."""
    rng = np.random.default_rng(seed)
    measured, section = np.asarray(measured, dtype=bool), np.asarray(section)
    out = []
    for s in np.unique(np.asarray(target_sections)):
        pool = np.flatnonzero(measured & (section == s))
        if pool.size > max_donors:
            pool = np.sort(rng.choice(pool, max_donors, replace=False))
        out.append(pool)
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


class DonorMatcher:
    """Donors' predictions and measured profiles, matched by predictions in their principal components.

    ``predicted`` and ``measured`` are (m, g) log-space profiles of the m donors; ``groups`` (m,) labels (e.g. the
    donors' sections) restrict a target to donors of its own group. ``n_components`` principal components of the
    donors' predictions (all of them when g is smaller) define the distance.
    """

    def __init__(self, predicted: np.ndarray, measured: np.ndarray, groups: np.ndarray | None = None,
                 n_components: int = 20):
        predicted = np.asarray(predicted, dtype=np.float64)
        self.measured = np.asarray(measured, dtype=np.float32)
        if predicted.shape != self.measured.shape:
            raise ValueError(f"donor predictions {predicted.shape} and profiles {self.measured.shape} differ")
        if predicted.shape[0] == 0:
            raise ValueError("no donor cells: predictive mean matching needs measured cells in the targets' section")
        self.groups = np.zeros(predicted.shape[0], dtype=np.int64) if groups is None else np.asarray(groups)
        self._mean = predicted.mean(0)
        centred = predicted - self._mean
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        self._basis = vt[: min(n_components, vt.shape[0])].T
        proj = self.project(predicted)
        self._trees = {}
        for gname in np.unique(self.groups):
            rows = np.flatnonzero(self.groups == gname)
            self._trees[gname] = (rows, cKDTree(proj[rows]))

    def project(self, predicted: np.ndarray) -> np.ndarray:
        """``(t, c)`` coordinates of (t, g) log-space predictions in the donors' principal components."""
        return (np.asarray(predicted, dtype=np.float64) - self._mean) @ self._basis

    def nearest(self, predicted: np.ndarray, d: int, groups: np.ndarray | None = None) -> np.ndarray:
        """``(t, d)`` donor rows whose predictions are nearest each target's ``predicted`` (t, g) profile, among
        its group's donors (fewer than ``d`` in a group: its donors repeat)."""
        proj = self.project(predicted)
        groups = np.zeros(proj.shape[0], dtype=self.groups.dtype) if groups is None else np.asarray(groups)
        out = np.zeros((proj.shape[0], d), dtype=np.int64)
        for gname in np.unique(groups):
            if gname not in self._trees:
                raise ValueError(f"no donor cells in group {str(gname)!r}")
            rows, tree = self._trees[gname]
            q = np.flatnonzero(groups == gname)
            kk = min(d, rows.size)
            _, nn = tree.query(proj[q], k=kk)
            nn = np.asarray(nn).reshape(q.size, kk)
            out[q] = rows[nn[:, np.arange(d) % kk]]
        return out

    def draw(self, predicted: np.ndarray, d: int, rng: np.random.Generator,
             groups: np.ndarray | None = None) -> np.ndarray:
        """``(t, g)`` the measured profile of one of each target's ``d`` nearest donors, drawn uniformly."""
        near = self.nearest(predicted, d, groups)
        pick = near[np.arange(near.shape[0]), rng.integers(0, d, near.shape[0])]
        return self.measured[pick].astype(np.float64)


#: donor cells per section at most (a random subset beyond): bounds the masked reconstruction passes
MAX_DONORS = 20000


def draw_from_donors(reconstruct, x_in, masked: np.ndarray, section: np.ndarray, target_log: np.ndarray,
                     target_section: np.ndarray, *, mask_ratio: float, donors: int, seed: int = 0) -> np.ndarray:
    """``(t, g)`` log-space profiles drawn by predictive mean matching for targets predicted ``target_log``.

    ``reconstruct(masked, rows)`` decodes ``rows`` with ``masked`` removed (as for
    :func:`~napari_squint.api.cifm_residual.masked_residuals`); ``x_in`` (N, g) is the log-normalised input of
    the graph, whose first ``n = len(section)`` rows are measured or masked cells of the slide; ``masked`` (N,)
    holds the targets. The donors are the measured cells of the targets' sections (``target_section`` (t,),
    labels comparable with ``section``), at most :data:`MAX_DONORS` per section; each target takes one of its
    ``donors`` best-matched donors at random (``seed``).
    """
    section = np.asarray(section)
    n = section.shape[0]
    cells = donor_cells(section, ~np.asarray(masked, dtype=bool)[:n], target_section, MAX_DONORS, seed=seed)
    rows = x_in[cells]
    measured = rows.toarray() if hasattr(rows, "toarray") else np.asarray(rows)
    predicted = measured - masked_residuals(reconstruct, x_in, masked, cells, mask_ratio, seed=seed)
    matcher = DonorMatcher(predicted, measured, groups=section[cells])
    return matcher.draw(target_log, donors, np.random.default_rng(seed), groups=np.asarray(target_section))
