"""Dock widget 2, "In-paint": impute the cells inside drawn polygons (or fill empty ones), compare with measured."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QHeaderView, QLabel, QSpinBox, QTableWidget, QTableWidgetItem

from napari_squint import _constants as K
from napari_squint._napari.dock import RegionPicker, SquintDock, region_mask, set_combo
from napari_squint._napari.figure import FigurePanel
from napari_squint._napari.slide_widget import _row
from napari_squint.tasks.inpaint_eval import METRICS, METRICS_HELP, InpaintRequest

CMAP = "viridis"


def _impute():
    """The in-painting front end, imported when used."""
    from napari_squint.tasks import impute

    return impute


class InpaintWidget(SquintDock):
    """Draw polygons, impute them, and compare the imputed expression of a gene with the measured one.

    The widget builds an :class:`~napari_squint.tasks.inpaint_eval.InpaintRequest`
    and runs :func:`~napari_squint.tasks.inpaint_eval.iter_inpaint` on a worker;
    the prepared slide (the Imputer) is kept in the session for the next run on
    the same slide and model.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        form = self.group("Regions")
        self.region = RegionPicker(self.viewer, default_name="impute regions")
        form.addRow("layer", self.region)
        self.method_combo = QComboBox()
        self.method_combo.setToolTip("context: each cell read against its nearest measured cells; infill: from the "
                                     "boundary inwards, ring by ring; oneshot: the paper's single pass")
        form.addRow("method", self.method_combo)
        self.draw_combo = QComboBox()
        self.draw_combo.setToolTip("mean: expected counts; logmean: counts whose log-normalised values are the "
                                   "expected log-normalised expression (what analyses read); sample: as spread "
                                   "as real cells (SQuINT: generated counts; CIFM: a measured cell matched to "
                                   "the prediction)")
        form.addRow("profile", self.draw_combo)
        imp = _impute()
        self._set_choices(list(imp.METHODS), imp.DEFAULT_METHOD, list(imp.DRAWS), imp.DEFAULT_DRAW)
        self.residual_check = QCheckBox("correct by nearby measured cells")
        self.residual_check.setChecked(True)
        self.residual_check.setToolTip("add the model's error on the measured microenvironments nearest each cell "
                                       "(log scale; logmean profile)")
        form.addRow(self.residual_check)
        self.fill_check = QCheckBox("place new cells in empty regions")
        self.fill_check.setChecked(True)
        form.addRow(self.fill_check)
        self.holdout_check = QCheckBox("hold out and retrain (honest)")
        self.holdout_check.setToolTip("train a new model that never sees the cells inside the regions, then impute")
        self.epochs_spin = QSpinBox(minimum=1, maximum=1000, value=10)
        self.epochs_spin.setToolTip("epochs of the retrained model")
        form.addRow(self.holdout_check)
        form.addRow("retrain epochs", self.epochs_spin)
        self.impute_button = self.button("Impute", self.impute)
        self.cancel_button = self.button("Cancel", self.cancel, busy=False)
        self.cancel_button.setEnabled(False)
        form.addRow(_row(self.impute_button, self.cancel_button))
        form = self.group("Result")
        self.gene_combo = QComboBox()
        self.gene_combo.setEditable(True)
        self.gene_combo.setToolTip("coloured on every cell: imputed inside the polygons, measured elsewhere")
        self.gene_combo.activated.connect(lambda *_: self.show_gene())
        form.addRow("gene", self.gene_combo)
        self.figure = FigurePanel(width=4.2, height=2.6)
        self.figure.setToolTip("the region and its surroundings, oriented as on the canvas; one colour scale")
        form.addRow(self.figure)
        # one row per metric (named, with its meaning on hover), one column per method: fits a narrow dock
        self.metrics_table = QTableWidget(len(METRICS), 0)
        self.metrics_table.setVerticalHeaderLabels([title for title, _ in METRICS.values()])
        for i, (_, help_text) in enumerate(METRICS.values()):
            self.metrics_table.verticalHeaderItem(i).setToolTip(help_text)
        self.metrics_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.metrics_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.metrics_table.setMinimumHeight(150)
        self.metrics_table.setVisible(False)
        form.addRow(self.metrics_table)
        self.metrics_label = QLabel("")
        self.metrics_label.setWordWrap(True)
        form.addRow(self.metrics_label)
        form.addRow(self.figure.export_row(self, "inpaint", table=self._table))
        self.output = None
        self.metrics: dict = {}
        self.finish_layout()

    def _set_choices(self, methods, method, draws, draw) -> None:
        set_combo(self.method_combo, methods, current=method, keep=False)
        set_combo(self.draw_combo, draws, current=draw, keep=False)

    def _table(self):
        from napari_squint.tasks.inpaint_eval import metrics_table

        return metrics_table(self.metrics) if self.metrics else None

    def refresh(self, what: str) -> None:
        s = self.session
        if what in ("init", "model", "slide") and s.model is not None:
            m = s.model
            if getattr(m, "impute_methods", ()):
                self._set_choices(list(m.impute_methods), m.default_method, list(m.draws), m.default_draw)
            if what in ("init", "model"):
                self.epochs_spin.setValue(m.default_epochs())  # one default per model, as in the API and CLI
            self.residual_check.setEnabled(bool(getattr(m, "supports_residual", False)))
            genes = list(m.genes)
            pref = None
            if s.adata is not None:  # the most expressed model gene is a useful first look
                from napari_squint.tasks.inpaint_eval import _counts

                mean = np.asarray(_counts(s.adata, genes[: min(len(genes), 500)], s.layer).mean(0)).ravel()
                pref = genes[int(np.argmax(mean))] if mean.size else None
            set_combo(self.gene_combo, genes, current=pref, keep=True)

    # -------------------------------------------------------------- impute
    def request(self) -> InpaintRequest:
        """The request the form describes (regions from the chosen layer)."""
        s = self.session
        mask, regions = region_mask(s, self.viewer, self.region.layer())
        if not regions and not mask.any():
            raise ValueError("the painted region holds no cell")
        residual = None if self.residual_check.isChecked() else False
        return InpaintRequest(regions=regions or None, mask=mask, method=self.method_combo.currentText() or None,
                              draw=self.draw_combo.currentText() or None, residual=residual,
                              fill_empty=self.fill_check.isChecked(), holdout=self.holdout_check.isChecked(),
                              epochs=self.epochs_spin.value(), train_options=dict(s.train_options))

    def impute(self):
        """Impute the cells inside the region layer's polygons (worker); optionally hold out and retrain first."""
        if not self.require_model():
            return None
        s = self.session
        try:
            req = self.request()
        except Exception as err:
            self.error(err)
            return None
        adata, model, cached = s.adata, s.model, s.cache.get("imputer")

        def work():
            from napari_squint.tasks.inpaint_eval import iter_inpaint

            return (yield from iter_inpaint(model, adata, req, imputer=cached))

        def done(run):
            if not run.holdout:
                s.cache["imputer"] = run.imputer  # prepared once per slide and model
            self.output, self.metrics = run.output, run.metrics
            s.results["impute"] = run.output
            if req.regions:
                s.regions = [r for r in s.regions if not r.name.startswith("impute")] + [
                    type(r)(r.section, r.polygon, f"impute_{i}") for i, r in enumerate(req.regions)]
            if run.holdout:
                s.adata.obs[K.HELDOUT_KEY] = req.mask
                s.results["holdout_model"] = run.model
            s.mark_changed("impute")
            self.show_gene()
            self._show_metrics(run.holdout)
            out = run.output
            created = int(out.obs[K.CREATED_KEY].sum())
            secs = ", ".join(f"{k} {v:.1f} s" for k, v in run.seconds.items())
            label = getattr(run.model, "label", "") or "model"
            self.set_status(f"imputed {out.n_obs - created:,} cells" + (f" and {created:,} new cells" if created
                                                                        else "") + f" with {label} ({secs})")

        return self.run_job(work, desc="in-painting", on_done=done, cancel_button=self.cancel_button)

    # ------------------------------------------------------------- display
    def show_gene(self, gene: str | None = None) -> None:
        """Colour every cell by ``gene`` (imputed inside, measured outside, one scale) and draw the close-up."""
        from napari_squint._napari.colouring import GENE, colour_by

        if gene is not None:
            self.gene_combo.setCurrentText(gene)
        gene = self.gene_combo.currentText()
        s, out = self.session, self.output
        if out is None or s.adata is None or gene not in s.adata.var_names:
            return
        try:
            rgba, legend, values = colour_by(s, GENE, gene=gene)
        except Exception as err:
            self.error(err)
            return
        self.colour_cells(rgba, legend=legend, values=values)
        self._draw(out, gene, values, legend.limits)

    def _draw(self, out, gene, values, limits) -> None:
        """Measured | imputed close-ups of the region's section, y pointing down as on the canvas."""
        s = self.session
        created = out.obs[K.CREATED_KEY].to_numpy()
        rows = s.adata.obs_names.get_indexer(out.obs_names[~created])
        from napari_squint._napari.colouring import gene_values

        measured_all, _ = gene_values(s.adata, gene, layer=s.layer)
        xy_out = np.asarray(out.obsm[s.spatial_key], dtype=np.float64)[:, :2]
        ctx = s.coords()
        labels = s.section_labels()
        sec_col = s.section_key if s.section_key in out.obs else None
        first = out.obs[sec_col].astype(str).iloc[0] if sec_col else labels[0]
        mine = (out.obs[sec_col].astype(str).to_numpy() == first) if sec_col else np.ones(out.n_obs, bool)
        lo_b, hi_b = xy_out[mine].min(0), xy_out[mine].max(0)
        pad = 0.35 * np.maximum(hi_b - lo_b, 1e-9)
        inside = np.zeros(s.adata.n_obs, bool)
        inside[rows] = True
        box = (labels == first) & np.all((ctx >= lo_b - pad) & (ctx <= hi_b + pad), axis=1) & ~inside
        lo, hi = limits
        gi = int(out.var_names.get_loc(gene)) if gene in out.var_names else None
        imputed = np.full(out.n_obs, np.nan)
        if gi is not None:
            from napari_squint.metrics import log_normalise

            col = log_normalise(np.asarray(out.layers[K.IMPUTED_LAYER]))[:, gi]
            imputed = np.asarray(col.toarray() if hasattr(col, "toarray") else col, dtype=np.float64).ravel()
        measured = np.full(out.n_obs, np.nan)
        measured[~created] = measured_all[rows]
        fig = self.figure.clear()
        axes = fig.subplots(1, 2, sharex=True, sharey=True)
        sc = None
        for ax, vals, title in ((axes[0], measured, "measured"), (axes[1], imputed, "imputed")):
            ax.scatter(ctx[box, 0], ctx[box, 1], s=5, c=values[box], cmap=CMAP, vmin=lo, vmax=hi, linewidths=0,
                       alpha=0.55)
            ok = mine & np.isfinite(vals)
            sc = ax.scatter(xy_out[ok, 0], xy_out[ok, 1], s=11, c=vals[ok], cmap=CMAP, vmin=lo, vmax=hi,
                            linewidths=0.4, edgecolors="white")
            ax.set_title(title, fontsize=8)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if not ok.any():
                ax.text(0.5, 0.5, "no measured cells\n(new cells)", ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)
        axes[0].invert_yaxis()  # napari draws y downwards: the close-up matches the canvas (shared axis)
        fig.colorbar(sc, ax=list(axes), shrink=0.8, label=f"{gene}, log1p(counts/10k)")
        fig.suptitle("region: white rims; around it: measured", fontsize=7)
        self.figure.draw()

    def _show_metrics(self, holdout: bool) -> None:
        if not self.metrics:
            self.metrics_table.setVisible(False)
            self.metrics_label.setText("no measured cells inside the regions: nothing to score against")
            return
        t = self.metrics_table
        t.setColumnCount(len(self.metrics))
        t.setHorizontalHeaderLabels(["baseline" if n == "neighbourhood average" else n for n in self.metrics])
        for c, (name, vals) in enumerate(self.metrics.items()):
            t.horizontalHeaderItem(c).setToolTip(name)
            for r, key in enumerate(METRICS):
                item = QTableWidgetItem(f"{vals[key]:.3f}")
                item.setToolTip(f"{name}: {METRICS[key][1]}")
                t.setItem(r, c, item)
        t.setVisible(True)
        note = ("model trained without these cells (honest)" if holdout else
                "<span style='color:#e9a'>the model saw these cells in training: tick 'hold out and retrain' "
                "for an honest score</span>")
        n = int((~self.output.obs[K.CREATED_KEY]).sum())
        self.metrics_label.setText(f"{n:,} measured cells scored. {METRICS_HELP} "
                                   "Hover a metric's name for its meaning.<br>" + note)
