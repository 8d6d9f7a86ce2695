"""What the in-painting front end hands a model's imputation engine, and what every engine shares.

The front end (:mod:`napari_squint.tasks.impute`) turns regions into a
:class:`TargetSet`; the model's engine (``model.imputation_engine(data,
section_labels)``: :class:`~napari_squint.api.squint_impute.SquintImputeEngine`,
:class:`~napari_squint.api.cifm_impute.CifmImputeEngine`) turns it into
imputed profiles with :meth:`ImputeEngine.impute`. The front end resolves the
method, draw and residual once (from the model's capability attributes) and
the engine receives resolved values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from napari_squint.data.imputation import microenv_members, microenv_sum
from napari_squint.data.prepare import PreparedSlide

__all__ = ["ImputeEngine", "TargetSet"]


@dataclass
class TargetSet:
    """The cells to impute, in a virtual index space: slide cells ``0..n-1``, created cells ``n..``.

    Attributes
    ----------
    targets
        ``(t,)`` sorted global indices of the slide cells to impute.
    cells
        ``(t + c,)`` ids of every imputed cell: ``targets`` then the created cells.
    nbr
        ``(t + c, w)`` their kNN rows (virtual ids, ``-1`` pads).
    xy
        ``(t + c, 2)`` coordinates, slide units.
    sections
        ``(t + c,)`` section labels (str).
    depth
        ``(t + c,)`` read depth given to each (the section median of observed cells).
    target_mask
        ``(n,)`` bool over the slide's cells.
    created_batch, created_cond, created_xy, created_region
        Batch ids ``(c,)``, covariates ``(c, d)``, coordinates ``(c, 2)`` and
        region (index among the filled regions) ``(c,)`` of the created cells.
    """

    targets: np.ndarray
    cells: np.ndarray
    nbr: np.ndarray
    xy: np.ndarray
    sections: np.ndarray
    depth: np.ndarray
    target_mask: np.ndarray
    created_batch: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    created_cond: np.ndarray | None = None
    created_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    created_region: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_created(self) -> int:
        return int(self.cells.size - self.targets.size)


class ImputeEngine:
    """A trained model and one prepared slide; :meth:`impute` is the model-specific part.

    Parameters
    ----------
    model
        The trained model.
    data
        The prepared slide (``model.prepare(adata)``).
    section_labels
        ``(n,)`` section label (str) of every cell.
    """

    def __init__(self, model, data: PreparedSlide, section_labels: np.ndarray):
        self.model, self.data = model, data
        self.section_labels = np.asarray(section_labels)
        self.library = data.library().astype(np.float64)
        self._section_masks: dict[str, np.ndarray] = {}
        self._trees: dict = {}

    def in_section(self, section: str) -> np.ndarray:
        """``(n,)`` bool mask of the cells of ``section`` (cached)."""
        if section not in self._section_masks:
            self._section_masks[section] = self.section_labels == section
        return self._section_masks[section]

    def observed_tree(self, section: str, pool: np.ndarray):
        """k-d tree of the cells ``pool`` of a section (kept while the pool stays the same)."""
        from scipy.spatial import cKDTree

        key = (section, hashlib.blake2b(pool.tobytes(), digest_size=16).hexdigest())
        if key not in self._trees:
            if len(self._trees) >= 8:
                self._trees.clear()
            self._trees[key] = cKDTree(self.data.coords[pool])
        return self._trees[key]

    def members(self, ts: TargetSet):
        """Membership of every target's microenvironment (:func:`~napari_squint.data.imputation.microenv_members`)."""
        return microenv_members(ts.cells, ts.nbr, ts.cells, self.data.n_cells)

    def nbr_sum(self, ts: TargetSet, imputed: np.ndarray) -> np.ndarray:
        """Measured counts of observed members + imputed counts of target members."""
        a_meas, a_imp = self.members(ts)
        return microenv_sum(self.data.counts, a_meas, a_imp, imputed)

    def impute(self, ts: TargetSet, *, method: str, draw: str, residual: bool, nbr_mode: str, substitute: str,
               seed: int) -> dict:
        """Impute every cell of ``ts``.

        Returns
        -------
        dict with ``imputed`` and ``imputed_nbr`` ``(t + c, g)`` counts,
        ``tokens`` ``(t + c,)`` (-1 without tokens) and ``rings`` ``(t + c,)``.
        """
        raise NotImplementedError
