"""Dock widget 4, "Activation score": top tokens of a group and every cell's activation (paper 5.3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtWidgets import QComboBox, QLabel, QSpinBox

from napari_squint import _constants as K
from napari_squint._napari.dock import SquintDock, set_combo
from napari_squint._napari.figure import FigurePanel
from napari_squint._napari.slide_widget import _row

CMAP = "plasma"  #: low scores stay visible on napari's black canvas
METHOD_LABELS = {"most frequent in the group": "frequency", "most enriched vs other groups": "enrichment"}


def _stratify():
    try:
        from napari_squint.tasks import stratify
    except ImportError:
        return None
    return stratify


def condition_columns(adata, *, max_levels: int = 50) -> list[str]:
    """obs columns that can name a condition (2 to ``max_levels`` values)."""
    out = []
    for c in adata.obs.columns:
        if c.startswith("squint"):
            continue
        n = adata.obs[c].nunique()
        if 2 <= n <= max_levels:
            out.append(c)
    return out


class ActivationWidget(SquintDock):
    """Choose a condition column and a group; colour every cell by its activation score."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        form = self.group("Condition")
        self.condition_combo = QComboBox()
        self.condition_combo.currentTextChanged.connect(self._fill_groups)
        form.addRow("column", self.condition_combo)
        self.group_combo = QComboBox()
        self.group_combo.setToolTip("the target group, e.g. the high-risk sample")
        form.addRow("group", self.group_combo)
        self.method_combo = QComboBox()
        self.method_combo.addItems(list(METHOD_LABELS))
        form.addRow("top tokens", self.method_combo)
        self.topk_spin = QSpinBox(minimum=1, maximum=100, value=5)
        self.run_button = self.button("Compute activation", self.compute)
        form.addRow(_row(QLabel("k"), self.topk_spin, self.run_button))
        form = self.group("Result")
        self.tokens_label = QLabel("")
        self.tokens_label.setWordWrap(True)
        form.addRow(self.tokens_label)
        self.colourbar = FigurePanel(width=3.6, height=0.9)
        form.addRow(self.colourbar)
        form.addRow(self.colourbar.export_row(self, "activation", table=self._table))
        self.result = None
        self.finish_layout()

    def _table(self):
        """The group's top tokens: frequency in the group and elsewhere, log2 odds ratio (CSV export)."""
        r = self.result
        if r is None:
            return None
        enr = r.enrichment.loc[list(r.top_tokens)].copy()
        enr.insert(0, "token", enr.index.astype(str))
        return enr.reset_index(drop=True)

    def refresh(self, what: str) -> None:
        s = self.session
        if what in ("init", "slide") and s.adata is not None:
            cols = condition_columns(s.adata)
            pref = next((c for c in ("condition", "sample", "animal_id", "behavior") if c in cols), None)
            set_combo(self.condition_combo, cols, current=pref, keep=what != "slide")
            self._fill_groups(self.condition_combo.currentText())

    def _fill_groups(self, column: str) -> None:
        a = self.session.adata
        if a is None or not column or column not in a.obs:
            return
        set_combo(self.group_combo, sorted(map(str, pd.unique(a.obs[column].astype(str)))), keep=False)

    def compute(self):
        """Top-k tokens of the group and every cell's activation score (worker), then colour the cells."""
        if not self.require_slide():
            return None
        stratify = _stratify()
        if stratify is None:
            self.error(RuntimeError("activation scores need napari_squint.tasks.stratify, which is not installed"))
            return None
        s = self.session
        if not s.has_tokens and s.model is None:
            self.error(RuntimeError("no tokens: train or load a model first"))
            return None
        adata, model = s.adata, s.model
        column, group = self.condition_combo.currentText(), self.group_combo.currentText()
        method, top_k = METHOD_LABELS[self.method_combo.currentText()], self.topk_spin.value()
        cell_type_key = K.CELL_TYPE_KEY if K.CELL_TYPE_KEY in adata.obs else None

        def work():
            return stratify.stratify(adata, condition_key=column, group=group, model=model, top_k=top_k,
                                     method=method, section_key=s.section_key, spatial_key=s.spatial_key,
                                     cell_type_key=cell_type_key, layer=s.layer, copy=True)

        def done(result):
            self.result = result
            a = s.adata
            a.obs[K.ACTIVATION_KEY] = np.asarray(result.activation, dtype=np.float32)
            if K.TOKEN_KEY not in a.obs:
                a.obs[K.TOKEN_KEY] = result.adata.obs[K.TOKEN_KEY]
            a.uns.setdefault(K.UNS_KEY, {})["stratify"] = result.adata.uns.get(K.UNS_KEY, {}).get("stratify", {})
            s.results["stratify"] = result
            self.colour_by_score()
            self._describe(result, column, group)
            s.mark_changed("activation")

        return self.run_job(work, desc=f"activation of {column} = {group}", on_done=done)

    def colour_by_score(self) -> None:
        from napari_squint._napari.colouring import ACTIVATION, colour_by

        rgba, legend, values = colour_by(self.session, ACTIVATION)
        lo, hi = legend.limits
        self.colour_cells(rgba, legend=legend, values=values)
        fig = self.colourbar.clear()
        ax = fig.add_subplot(111)
        import matplotlib as mpl

        fig.colorbar(mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(lo, hi), cmap=CMAP), cax=ax,
                     orientation="horizontal", label="activation score (cell + 1-hop neighbours)")
        self.colourbar.draw()

    def _describe(self, result, column, group) -> None:
        enr = result.enrichment
        rows = []
        for t in result.top_tokens:
            r = enr.loc[t]
            rows.append(f"<tr><td>token {t}</td><td>{100 * r['frac_group']:.1f}%</td>"
                        f"<td>{100 * r['frac_other']:.1f}%</td><td>{r['log2_odds_ratio']:+.2f}</td></tr>")
        score = result.activation
        self.tokens_label.setText(
            f"top {len(result.top_tokens)} tokens of <b>{column} = {group}</b> ({result.method}):"
            "<table cellspacing=4><tr><th></th><th>in group</th><th>others</th><th>log2 OR</th></tr>"
            + "".join(rows) + "</table>"
            f"{int((score > 0.75).sum()):,} cells score &gt; 0.75, {int((score < 0.25).sum()):,} score &lt; 0.25")
        self.set_status(f"activation score written to obs['{K.ACTIVATION_KEY}']")
