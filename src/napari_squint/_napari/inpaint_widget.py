"""Dock widget 2, "In-paint": impute the cells inside drawn polygons (or fill empty ones), compare with measured."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QLabel, QSpinBox

from napari_squint import _constants as K
from napari_squint._napari.colours import colour_continuous
from napari_squint._napari.dock import RegionPicker, SquintDock, region_mask, remove_layers, set_combo
from napari_squint._napari.figure import FigurePanel
from napari_squint._napari.layers import cell_layers
from napari_squint._napari.slide_widget import _row

CMAP = "viridis"
#: layer.metadata key of the imputation overlays (replaced on every run)
OVERLAY_META = "squint_impute_overlay"
METRIC_LABELS = {"pc_cell": "PC cell ↑", "pc_gene": "PC gene ↑", "mmd": "MMD ↓", "energy": "E ↓"}


def _impute():
    """The colleague's imputation module, or None while it is missing."""
    try:
        from napari_squint.tasks import impute
    except ImportError:
        return None
    return impute


def _counts(adata, genes, layer):
    import scipy.sparse as sp

    x = adata.layers[layer] if layer else adata.X
    idx = adata.var_names.get_indexer(list(genes))
    x = x[:, idx]
    return x.tocsr() if sp.issparse(x) else np.asarray(x)


def gene_values(counts, gene_index: int) -> np.ndarray:
    """(m,) log1p(counts per 10,000) of one gene, the scale the metrics use."""
    from napari_squint.metrics import log_normalise

    col = log_normalise(counts)[:, gene_index]
    col = col.toarray() if hasattr(col, "toarray") else np.asarray(col)
    return np.asarray(col, dtype=np.float64).ravel()


def score(adata, out, *, genes, layer, section_key, spatial_key, seed: int = 0,
          name: str = "SQuINT") -> dict[str, dict]:
    """Metrics of the imputed measured cells against their measurements, with the neighbourhood average beside.

    Returns ``{name: {...}, "neighbourhood average": {...}}`` (``name`` is the model's, ``"SQuINT"`` or
    ``"CIFM"``; empty when fewer than 3 measured cells).
    """
    from napari_squint.metrics import evaluate_imputation, neighbourhood_average, reference_pca

    measured = ~out.obs[K.CREATED_KEY].to_numpy()
    if measured.sum() < 3:
        return {}
    targets = adata.obs_names.get_indexer(out.obs_names[measured])
    counts = _counts(adata, genes, layer)
    observed = np.ones(adata.n_obs, dtype=bool)
    observed[targets] = False
    rng = np.random.default_rng(seed)
    ref_rows = np.flatnonzero(observed)
    ref_rows = np.sort(rng.choice(ref_rows, size=min(5000, ref_rows.size), replace=False))
    pca = reference_pca(counts[ref_rows], n_components=min(50, len(genes) - 1), seed=seed)
    true = counts[targets]
    pred = np.asarray(out.layers[K.IMPUTED_LAYER])[measured]
    section = adata.obs[section_key].astype(str).to_numpy() if section_key and section_key in adata.obs else None
    base = neighbourhood_average(np.asarray(adata.obsm[spatial_key])[:, :2], counts, observed, targets,
                                 section=section)
    return {name: evaluate_imputation(true, pred, pca=pca, seed=seed),
            "neighbourhood average": evaluate_imputation(true, base, pca=pca, seed=seed)}


class InpaintWidget(SquintDock):
    """Draw polygons, impute them, and compare the imputed expression of a gene with the measured one."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        form = self.group("Regions")
        self.region = RegionPicker(napari_viewer, default_name="impute regions")
        form.addRow("layer", self.region)
        self.method_combo = QComboBox()
        imp = _impute()
        methods = list(imp.METHODS) if imp else ["context", "infill", "oneshot"]
        self.method_combo.addItems(methods)
        if imp:
            self.method_combo.setCurrentText(imp.DEFAULT_METHOD)
        self.method_combo.setToolTip("context: each cell read against its nearest measured cells; infill: from the "
                                     "boundary inwards, ring by ring; oneshot: the paper's single pass")
        form.addRow("method", self.method_combo)
        self.draw_combo = QComboBox()
        self.draw_combo.addItems(list(imp.DRAWS) if imp else ["mean", "logmean", "sample"])
        if imp:
            self.draw_combo.setCurrentText(imp.DEFAULT_DRAW)
        self.draw_combo.setToolTip("mean: expected counts; logmean: counts whose log-normalised values are the "
                                   "expected log-normalised expression (what analyses read); sample: generated "
                                   "counts, as spread as real cells; SQuINT only")
        form.addRow("profile", self.draw_combo)
        self.residual_check = QCheckBox("correct by nearby measured cells")
        self.residual_check.setChecked(True)
        self.residual_check.setToolTip("add the model's error on the measured microenvironments nearest each cell "
                                       "(log scale; logmean profile, SQuINT only)")
        form.addRow(self.residual_check)
        self.fill_check = QCheckBox("place new cells in empty regions")
        self.fill_check.setChecked(True)
        form.addRow(self.fill_check)
        self.holdout_check = QCheckBox("hold out and retrain (honest)")
        self.holdout_check.setToolTip("train a new model that never sees the cells inside the regions, then impute")
        self.epochs_spin = QSpinBox(minimum=1, maximum=1000, value=10)
        form.addRow(_row(self.holdout_check, QLabel("epochs"), self.epochs_spin))
        self.impute_button = self.button("Impute", self.impute)
        self.cancel_button = self.button("Cancel", self.cancel, busy=False)
        self.cancel_button.setEnabled(False)
        form.addRow(_row(self.impute_button, self.cancel_button))
        form = self.group("Result")
        self.gene_combo = QComboBox()
        self.gene_combo.currentTextChanged.connect(lambda *_: self.show_gene())
        form.addRow("gene", self.gene_combo)
        self.figure = FigurePanel(width=4.2, height=2.4)
        form.addRow(self.figure)
        self.metrics_label = QLabel("")
        self.metrics_label.setWordWrap(True)
        form.addRow(self.metrics_label)
        self.output = None
        self.metrics: dict = {}
        self.finish_layout()

    def refresh(self, what: str) -> None:
        s = self.session
        if what in ("init", "model", "slide") and s.model is not None:
            genes = list(s.model.genes)
            pref = None
            if s.adata is not None:
                # the most variable model gene is a useful first look
                x = _counts(s.adata, genes[: min(len(genes), 500)], s.layer)
                mean = np.asarray(x.mean(0)).ravel()
                pref = genes[int(np.argmax(mean))] if mean.size else None
            set_combo(self.gene_combo, genes, current=pref, keep=True)

    # -------------------------------------------------------------- impute
    def impute(self):
        """Impute the cells inside the region layer's polygons (worker); optionally hold out and retrain first."""
        if not self.require_model():
            return None
        imp = _impute()
        if imp is None:
            self.error(RuntimeError("in-painting needs napari_squint.tasks.impute, which is not installed"))
            return None
        s = self.session
        try:
            mask, regions = region_mask(s, self.viewer, self.region.layer())
        except Exception as err:
            self.error(err)
            return None
        if not regions and not mask.any():
            self.error(ValueError("the painted region holds no cell"))
            return None
        holdout = self.holdout_check.isChecked()
        method, fill_empty = self.method_combo.currentText(), self.fill_check.isChecked()
        draw = self.draw_combo.currentText()
        residual = None if self.residual_check.isChecked() else False
        if s.model_kind == "cifm":  # CIFM has no context method (its default is the infill) and no count model
            method = "infill" if method == "context" else method
            draw = "mean"
        adata, model = s.adata, s.model
        kind = s.model_kind
        name = "CIFM" if kind == "cifm" else "SQuINT"
        opts = _retrain_options(model, s.train_options)
        epochs = self.epochs_spin.value()
        cached = s.cache.get("imputer")

        def work():
            from napari_squint.train.events import ProgressEvent

            if holdout:
                if kind == "cifm":
                    from napari_squint.api.cifm import Cifm as Model
                else:
                    from napari_squint.api.squint import Squint as Model

                yield ProgressEvent("prepare", message=f"training without the {int(mask.sum())} cells inside")
                m = Model(adata, section_key=model.section_key, spatial_key=model.spatial_key, layer=model.layer,
                          genes=list(model.genes), holdout=mask, config=_copy_config(model.config),
                          **{**opts, "epochs": epochs})
                yield from m.iter_train()
                imputer = imp.Imputer(m, adata)
            else:
                m = model
                imputer = cached if cached is not None and cached.model is model and cached.adata is adata \
                    else imp.Imputer(model, adata)
            yield ProgressEvent("impute", message="imputing")
            out = imputer.impute(regions=regions or None, mask=None if regions else mask, method=method,
                                 fill_empty=fill_empty, draw=draw, residual=residual)
            yield ProgressEvent("metrics", message="scoring against the measured cells")
            metrics = score(adata, out, genes=list(m.genes), layer=model.layer, section_key=s.section_key,
                            spatial_key=s.spatial_key, name=name)
            return out, metrics, imputer

        def done(result):
            out, metrics, imputer = result
            if not holdout:
                s.cache["imputer"] = imputer
            self.output, self.metrics = out, metrics
            s.results["impute"] = out
            if regions:
                s.regions = [r for r in s.regions if not r.name.startswith("impute")] + [
                    type(r)(r.section, r.polygon, f"impute_{i}") for i, r in enumerate(regions)]
            if holdout:
                s.adata.obs[K.HELDOUT_KEY] = mask
                s.results["holdout_model"] = imputer.model
            self.show_gene()
            self._show_metrics(holdout)
            created = int(out.obs[K.CREATED_KEY].sum())
            self.set_status(f"imputed {out.n_obs - created:,} cells" + (f" and {created:,} new cells" if created
                                                                        else "") + f" ({method}, {name})")
            s.mark_changed("impute")

        return self.run_job(work, desc="in-painting", on_done=done, cancel_button=self.cancel_button)

    # ------------------------------------------------------------- display
    def show_gene(self) -> None:
        out, gene = self.output, self.gene_combo.currentText()
        if out is None or gene not in out.var_names:
            return
        s = self.session
        gi = int(out.var_names.get_loc(gene))
        imputed = gene_values(np.asarray(out.layers[K.IMPUTED_LAYER]), gi)
        created = out.obs[K.CREATED_KEY].to_numpy()
        measured = np.full(out.n_obs, np.nan)
        if (~created).any():
            rows = s.adata.obs_names.get_indexer(out.obs_names[~created])
            measured[~created] = gene_values(_counts(s.adata, list(out.var_names), s.layer)[rows], gi)
        hi = float(np.nanmax(np.r_[imputed, measured, 1e-6]))
        self._overlay(out, imputed, measured, gene, hi)
        self._draw(out, imputed, measured, gene, hi)

    def _overlay(self, out, imputed, measured, gene, hi) -> None:
        remove_layers(self.viewer, [lyr for lyr in self.viewer.layers if OVERLAY_META in lyr.metadata])
        world, size = self._world(out)
        for name, values, visible in ((f"measured · {gene}", measured, False), (f"imputed · {gene}", imputed, True)):
            ok = np.isfinite(values)
            if not ok.any():
                continue
            rgba, _ = colour_continuous(values[ok], cmap=CMAP, vmin=0.0, vmax=hi)
            self.viewer.add_points(world[ok], face_color=rgba, border_color=rgba, size=size, border_width=0, name=name,
                                   visible=visible, metadata={OVERLAY_META: True})

    def _world(self, out) -> tuple[np.ndarray, float]:
        """World (row, col) of the output cells via their sections' layer offsets."""
        s = self.session
        xy = np.asarray(out.obsm[s.spatial_key], dtype=np.float64)[:, :2]
        sec_col = s.section_key if s.section_key in out.obs else None
        sections = out.obs[sec_col].astype(str).to_numpy() if sec_col else np.full(out.n_obs, "slide")
        world = np.column_stack([xy[:, 1], xy[:, 0]])
        size = 1.0
        for layer in cell_layers(self.viewer, s.adata):
            info = layer.metadata["squint_cells"]
            sel = sections == info["section"]
            world[sel] += np.asarray(info["offset"])
            size = 0.9 * info["spacing"]
        return world, size

    def _draw(self, out, imputed, measured, gene, hi) -> None:
        s = self.session
        fig = self.figure.clear()
        axes = fig.subplots(1, 2, sharex=True, sharey=True)
        xy = np.asarray(out.obsm[s.spatial_key])[:, :2]
        lo_b, hi_b = xy.min(0), xy.max(0)
        pad = 0.35 * np.maximum(hi_b - lo_b, 1e-9)
        ctx = s.coords()
        sec_col = s.section_key if s.section_key in out.obs else None
        first = out.obs[sec_col].astype(str).iloc[0] if sec_col else None
        in_sec = s.section_labels() == first if first is not None else np.ones(len(ctx), dtype=bool)
        box = in_sec & np.all((ctx >= lo_b - pad) & (ctx <= hi_b + pad), axis=1)
        mine = out.obs[sec_col].astype(str).to_numpy() == first if first is not None else np.ones(out.n_obs, bool)
        for ax, values, title in ((axes[0], measured, "measured"), (axes[1], imputed, "imputed")):
            ax.scatter(ctx[box, 0], ctx[box, 1], s=4, c="0.82", linewidths=0)
            ok = mine & np.isfinite(values)
            sc = ax.scatter(xy[ok, 0], xy[ok, 1], s=9, c=values[ok], cmap=CMAP, vmin=0, vmax=hi, linewidths=0)
            ax.set_title(f"{title} {gene}", fontsize=8)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if not ok.any():
                ax.text(0.5, 0.5, "no measured cells\n(new cells)", ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)
        fig.colorbar(sc, ax=list(axes), shrink=0.8, label="log1p(per 10k)")
        self.figure.draw()

    def _show_metrics(self, holdout: bool) -> None:
        if not self.metrics:
            self.metrics_label.setText("no measured cells inside the regions: nothing to score against")
            return
        head = "".join(f"<th>{METRIC_LABELS[k]}</th>" for k in METRIC_LABELS)
        rows = "".join(f"<tr><td>{name}</td>" + "".join(f"<td>{vals[k]:.3f}</td>" for k in METRIC_LABELS) + "</tr>"
                       for name, vals in self.metrics.items())
        note = ("model trained without these cells (honest)" if holdout else
                "<span style='color:#e9a'>the model saw these cells in training: tick 'hold out and retrain' "
                "for an honest score</span>")
        n = int((~self.output.obs[K.CREATED_KEY]).sum())
        self.metrics_label.setText(f"{n:,} measured cells, per-cell profiles:"
                                   f"<table cellspacing=4><tr><th></th>{head}</tr>{rows}</table>{note}")


def _copy_config(config):
    """A copy of a model's config (SquintConfig or CifmConfig), for a retrained model."""
    from napari_squint.train.cifm_loop import CifmConfig
    from napari_squint.train.config import SquintConfig

    cls = CifmConfig if isinstance(config, CifmConfig) else SquintConfig
    return cls.from_dict(config.to_dict())


def _retrain_options(model, options: dict) -> dict:
    """The form's training options that apply to ``model``'s kind, without ``epochs``.

    The slide form may hold SQuINT options (``codebook_size``...) while the
    session's model is a CIFM model: those are dropped rather than warned about.
    """
    opts = {k: v for k, v in options.items() if k != "epochs"}
    if getattr(model, "kind", "squint") == "cifm":
        from dataclasses import fields

        from napari_squint.train.cifm_loop import CifmConfig

        names = {f.name for f in fields(CifmConfig)}
        opts = {k: v for k, v in opts.items() if k in names}
    return opts
