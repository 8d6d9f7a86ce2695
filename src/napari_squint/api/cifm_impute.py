"""CIFM's in-painting engine: targets removed from the radius graph, padded with ``e`` and decoded.

``"oneshot"`` decodes every target at once (what
:meth:`~napari_squint.api.cifm.Cifm.impute_cells` does); ``"infill"`` takes
the rings on the radius graph (hops to an observed cell) and substitutes each
ring's imputed profile before the next one. Created cells join the radius
graph of their section. ``tokens`` are -1 (CIFM has no tokens). With
``CifmConfig.residual`` the local residual correction
(:mod:`napari_squint.api.cifm_residual`) is added afterwards, as in
:meth:`~napari_squint.api.cifm.Cifm.impute_cells`; ``draw="sample"`` replaces
each reconstruction by a measured donor cell (:mod:`napari_squint.api.cifm_pmm`).
"""

from __future__ import annotations

import numpy as np

from napari_squint.api.impute_engine import ImputeEngine, TargetSet
from napari_squint.data.cifm_batch import replace_rows
from napari_squint.data.cifm_graph import graph_from_prepared
from napari_squint.data.imputation import counts_from_log, hops_to_observed, log_normalise_rows
from napari_squint.models.cifm_infer import reconstruct_tiled

__all__ = ["CifmImputeEngine"]


class CifmImputeEngine(ImputeEngine):
    """In-painting with a :class:`~napari_squint.api.cifm.Cifm` model (see :class:`ImputeEngine`)."""

    def __init__(self, model, data, section_labels):
        super().__init__(model, data, section_labels)
        self._graph = None  # the slide's radius graph, built on first use

    def graph(self):
        """CIFM's radius graph of the prepared slide (built once, kept for later calls)."""
        if self._graph is None:
            self._graph = self.model.graph_of(self.data)
        return self._graph

    def impute(self, ts: TargetSet, *, method: str, draw: str, residual: bool, nbr_mode: str, substitute: str,
               seed: int) -> dict:
        model, cfg, d = self.model, self.model.config, self.data
        n, g = d.n_cells, d.n_genes
        all_t = ts.cells
        n_new = ts.n_created
        is_t = np.zeros(n + n_new, dtype=bool)
        is_t[all_t] = True
        est = np.concatenate([self.library, np.zeros(n_new)])
        est[all_t] = ts.depth
        # ---- the radius graph (new cells join their section's graph) ----
        if n_new:
            graph = graph_from_prepared(d, cfg, extra_coords=ts.created_xy, extra_batch=ts.created_batch)
        else:
            graph = self.graph()
        # ---- impute: all targets masked; infill unmasks ring by ring with the imputed profile ----
        tt = all_t.size
        imputed = np.zeros((tt, g))
        if method == "oneshot":
            rings = np.zeros(tt, dtype=np.int64)
            order = [np.arange(tt)]
        else:
            rings = hops_to_observed(all_t, graph.adj, ~is_t)
            order = [np.flatnonzero(rings == r) for r in np.unique(rings)]
        masked = is_t.copy()
        x_cur = graph.x_in
        x_log = np.zeros((tt, g))
        for sel in order:
            rows = all_t[sel]
            x_log[sel] = reconstruct_tiled(model.module, graph, masked, rows, cfg, model.device, x_override=x_cur)
            imputed[sel] = counts_from_log(x_log[sel], est[rows])
            if method == "infill":
                x_cur = replace_rows(x_cur, rows, log_normalise_rows(imputed[sel]))
                masked[rows] = False
        if draw == "sample":  # predictive mean matching: measured donor cells matched to the reconstructions
            drawn = model.donor_draw(graph, is_t, self.section_labels.astype(str), x_log, ts.sections.astype(str),
                                     seed=seed)
            imputed = counts_from_log(drawn, est[all_t])
        elif cfg.residual:  # CifmConfig.residual: the measured cells' masked-reconstruction error, after the passes
            shift = model.local_correction(d, graph, is_t, ts.xy, ts.sections.astype(str),
                                           section=self.section_labels.astype(str))
            imputed = counts_from_log(np.maximum(x_log + shift, 0.0), est[all_t])
        return {"imputed": imputed, "imputed_nbr": self.nbr_sum(ts, imputed),
                "tokens": np.full(tt, -1, dtype=np.int64), "rings": rings}
