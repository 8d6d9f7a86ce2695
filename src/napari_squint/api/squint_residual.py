"""Local residual correction of imputed profiles (regression kriging on the model's errors).

A token-based imputation carries the *type* of a cell well but not the
smooth, region-wide deviations of expression that no token captures (a
gradient across a nucleus, a section's staining). The measured cells around
a polygon show those deviations directly: the model's error on *them*.

For a measured cell ``j`` whose microenvironment holds no target, the
**residual** is its log-normalised measured microenvironment minus the
model's expected log-normalised microenvironment, decoded from ``j``'s own
token, both normalised by the measured read depth ``L_j``::

    r_j = log1p(1e4 * X_nbr_j / L_j) - E[log1p(1e4 * Y / L_j)],   Y ~ NB(p_j L_j, theta_nbr)

(``p_j`` the decoder's microenvironment proportions, ``theta_nbr`` its
dispersion; :func:`~napari_squint.nn.log_estimate.expected_log1p`). A
target's **correction** is the mean residual of its ``k`` nearest such cells
of its section. It is added to the target's expected log-normalised profile
(the ``shift`` of :func:`~napari_squint.nn.log_estimate.log_space_counts`),
and to that of its microenvironment weighted by the targets' share of its
read depth (measured members are already measured).

Microenvironments rather than single cells: a microenvironment's residual
averages the noise of its members, so the correction carries the local
deviation of expression rather than the counting noise of a few cells
(single-cell residuals gave a larger loss of per-gene correlation). On the
MERFISH patch benchmark the correction cuts the MMD and energy distance of
both imputed profiles by a quarter to a half, at a small cost in per-gene
correlation against the model alone (docs/imputation.md).

Only measured cells with no target in their graph row are used: their
encoding (one GraphSAGE hop) and their microenvironment read no target, so
their residuals are the same whatever the polygon and are computed once
and cached by :class:`~napari_squint.api.squint_impute.SquintImputeEngine`.
"""

from __future__ import annotations

import numpy as np

from napari_squint.nn.log_estimate import expected_log1p

__all__ = ["clean_cells", "microenvironment_residuals"]


def clean_cells(nbr: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Cells that are not targets and have no target among their graph neighbours.

    Parameters
    ----------
    nbr
        (n, w) padded neighbour table (-1 pads).
    targets
        (n,) bool, True for targets.

    Returns
    -------
    (n,) bool.
    """
    targets = np.asarray(targets, dtype=bool)
    touches = ((nbr >= 0) & targets[np.maximum(nbr, 0)]).any(axis=1)
    return ~targets & ~touches


def microenvironment_residuals(model, data, cells: np.ndarray, *, batch_size: int = 8192,
                               target_sum: float = 1e4) -> np.ndarray:
    """Residuals ``r_j`` (see the module docstring) of ``cells`` of prepared ``data``, float32 (m, g).

    The cells are encoded with their measured inputs (none may be a target's
    neighbour: use :func:`clean_cells`) and decoded from their nearest code.
    """
    cells = np.asarray(cells, dtype=np.int64)
    if cells.size == 0:
        return np.zeros((0, data.n_genes), dtype=np.float32)
    enc = model.encode(data, cells=cells, decode=True, batch_size=batch_size)
    measured = data.x_nbr[cells].toarray().astype(np.float64)
    depth = measured.sum(axis=1, keepdims=True)
    scale = target_sum / np.maximum(depth, 1.0)
    theta_n = model.dispersions()[1]
    expected = expected_log1p(enc["probs"].astype(np.float64) * depth, theta_n, scale)
    return (np.log1p(measured * scale) - expected).astype(np.float32)
