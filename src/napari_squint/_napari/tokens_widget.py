"""Dock widget 3, "Tokens": colour cells by token, pick a token, its top genes, a programme dot plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
)

from napari_squint import _constants as K
from napari_squint._napari.colours import colour_categories, highlight
from napari_squint._napari.dock import SquintDock
from napari_squint._napari.figure import FigurePanel
from napari_squint._napari.slide_widget import _row

TOKEN_ROLE = Qt.ItemDataRole.UserRole
#: how the dot plot picks its tokens
RANKS = {"most used": "count", "highest programme expression": "programme"}
#: tokens with fewer cells are left out of the programme ranking
MIN_CELLS_RANKED = 20
#: overview columns and what they mean
OVERVIEW_COLUMNS = {
    "token": "the token (colour as on the canvas)",
    "cells": "cells holding the token (share of the slide)",
    "top cell types": "most common cell types among its cells",
    "top genes": "marker genes: up in the token's cells vs all others (t-test)",
    "sections": "sections where it occurs, and where most of its cells are",
}


def _explain():
    """The colleague's token-interpretation module, or None while it is missing."""
    try:
        from napari_squint.tasks import explain
    except ImportError:
        return None
    return explain


def token_colours(adata) -> tuple[np.ndarray, list, np.ndarray]:
    """Per-cell RGBA, the tokens present and their colours (stable: a token's colour depends on its id)."""
    return colour_categories(adata.obs[K.TOKEN_KEY])


class TokensWidget(SquintDock):
    """Colour cells by token with a legend; highlight a token; top genes; programme dot plot."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        form = self.group("Tokens")
        self.assign_button = self.button("Assign tokens", self.assign_tokens, tip="run the model on every cell")
        self.colour_button = self.button("Colour by token", self.colour_by_token)
        form.addRow(_row(self.assign_button, self.colour_button))
        self.legend = QListWidget()
        self.legend.setMinimumHeight(160)
        self.legend.setToolTip("click a token (or a cell on the canvas) to highlight its cells")
        self.legend.currentItemChanged.connect(self._legend_changed)
        form.addRow(self.legend)
        self.all_button = self.button("Show all tokens", self.clear_selection, busy=False)
        self.count_label = QLabel("")
        form.addRow(_row(self.all_button, self.count_label))  # its own row, below the legend
        self.genes_label = QLabel("select a token to see its top genes")
        self.genes_label.setWordWrap(True)
        self.genes_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.genes_label)

        form = self.group("Overview of every token")
        self.overview_button = self.button("Describe all tokens", self.describe_tokens,
                                           tip="size, main cell types, marker genes (t-test, token vs rest), "
                                               "sections; click a row to select the token")
        form.addRow(self.overview_button)
        self.overview = QTableWidget(0, len(OVERVIEW_COLUMNS))
        self.overview.setHorizontalHeaderLabels(list(OVERVIEW_COLUMNS))
        for i, tip in enumerate(OVERVIEW_COLUMNS.values()):
            self.overview.horizontalHeaderItem(i).setToolTip(tip)
        self.overview.verticalHeader().setVisible(False)
        self.overview.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.overview.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.overview.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.overview.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.overview.setWordWrap(False)
        self.overview.setMinimumHeight(180)
        self.overview.cellClicked.connect(lambda row, _col: self._overview_clicked(row))
        form.addRow(self.overview)
        self.overview_export = QPushButton("Save table…")
        self.overview_export.setToolTip("CSV; never replaces a file napari-squint did not write")
        self.overview_export.clicked.connect(lambda *_: self._ask_save_overview())
        form.addRow(self.overview_export)
        self.overview_table = None

        form = self.group("Gene programme (dot plot across tokens)")
        self.programme_edit = QLineEdit()
        self.programme_edit.setPlaceholderText("genes, e.g. Cd68, Apoe, C1qa")
        form.addRow("genes", self.programme_edit)
        self.n_tokens_spin = QSpinBox(minimum=2, maximum=200, value=20)
        self.rank_combo = QComboBox()
        self.rank_combo.addItems(list(RANKS))
        self.rank_combo.setToolTip("which tokens to show: the most used ones, or those expressing the programme most")
        self.dot_button = self.button("Dot plot", self.dot_plot)
        form.addRow(_row(QLabel("tokens"), self.n_tokens_spin, self.rank_combo))
        form.addRow(self.dot_button)
        self.dotplot = FigurePanel(width=4.2, height=4.0)
        form.addRow(self.dotplot)
        form.addRow(self.dotplot.export_row(self, "programme_dotplot", table=lambda: self.dot_table))
        self.dot_table = None
        self.selected_token = None
        self.summary = None  # explain_tokens() result
        self.finish_layout()

    # ----------------------------------------------------------- session
    def refresh(self, what: str) -> None:
        s = self.session
        self.assign_button.setEnabled(s.model is not None and not s.model_lacks_tokens
                                      and not (self.job and self.job.running))
        if what == "model" and not s.has_tokens:
            self.count_label.setText(_no_tokens_text(s))
        if what in ("tokens", "slide", "init"):
            self.summary = None
            self.overview_table = None
            self.overview.setRowCount(0)
            self._fill_legend()
            if what == "tokens" and s.has_tokens:
                self.colour_by_token()
        if what == "pick" and s.picked is not None and s.has_tokens:
            self.select_token(s.adata.obs[K.TOKEN_KEY].iloc[s.picked])
            self.bring_forward()  # the answer to a click on a cell is here

    def _fill_legend(self) -> None:
        self.legend.blockSignals(True)
        self.legend.clear()
        self.selected_token = None
        s = self.session
        if not s.has_tokens:
            self.count_label.setText(_no_tokens_text(s))
            self.legend.blockSignals(False)
            return
        tok = s.adata.obs[K.TOKEN_KEY]
        _, cats, lut = token_colours(s.adata)
        counts = tok.value_counts()
        colour = {c: lut[i] for i, c in enumerate(cats)}
        for t, n in counts.items():
            if n == 0:
                continue
            item = QListWidgetItem(f"token {t}  ·  {n:,} cells ({100 * n / len(tok):.1f}%)")
            pm = QPixmap(14, 14)
            r, g, b, _ = (np.asarray(colour[t]) * 255).astype(int)
            pm.fill(QColor(int(r), int(g), int(b)))
            item.setIcon(QIcon(pm))
            item.setData(TOKEN_ROLE, t)
            self.legend.addItem(item)
        self.count_label.setText(f"{(counts > 0).sum()} tokens in use")
        self.legend.blockSignals(False)

    # ------------------------------------------------------------ actions
    def assign_tokens(self):
        """Run the model on every cell of the slide (worker) and colour by token."""
        if not self.require_model():
            return None
        if self.session.model_lacks_tokens:
            self.error(RuntimeError(_no_tokens_text(self.session)))
            return None
        model, adata = self.session.model, self.session.adata

        def work():
            return model.tokens(adata, copy=True)

        def done(tokens):
            a = self.session.adata
            a.obs[K.TOKEN_KEY] = tokens.obs[K.TOKEN_KEY]
            for key in (K.LATENT_KEY, K.CODES_KEY):
                a.obsm[key] = tokens.obsm[key]
            self.session.mark_changed("tokens")
            self.set_status(f"{a.obs[K.TOKEN_KEY].nunique()} tokens over {a.n_obs:,} cells")

        return self.run_job(work, desc="assigning tokens", on_done=done)

    def colour_by_token(self) -> None:
        """Colour every cell by its token (stable colours), highlighting the selected token if any."""
        if not self.session.has_tokens:
            self.error(RuntimeError(_no_tokens_text(self.session) if self.session.model_lacks_tokens else
                                    f"no tokens: obs[{K.TOKEN_KEY!r}] is missing; train or load a model"))
            return
        from napari_squint._napari.colouring import TOKEN, colour_by

        rgba, legend, values = colour_by(self.session, TOKEN)
        if self.selected_token is not None:
            rgba = highlight(rgba, self.session.adata.obs[K.TOKEN_KEY].to_numpy() == self.selected_token)
            legend.note = f"; token {self.selected_token} highlighted"
        self.colour_cells(rgba, legend=legend, values=values)

    def select_token(self, token) -> None:
        """Highlight the cells of ``token`` and show its top genes (as clicking it in the legend)."""
        for i in range(self.legend.count()):
            item = self.legend.item(i)
            if item.data(TOKEN_ROLE) == token:
                self.legend.setCurrentItem(item)  # -> _legend_changed
                return
        self.error(KeyError(f"token {token!r} is not in use on this slide"))

    def clear_selection(self) -> None:
        self.legend.setCurrentItem(None)
        self.selected_token = None
        self.genes_label.setText("select a token to see its top genes")
        if self.session.has_tokens:
            self.colour_by_token()

    def _legend_changed(self, current, _previous=None) -> None:
        if current is None:
            return
        self.selected_token = current.data(TOKEN_ROLE)
        self.colour_by_token()
        self.show_top_genes()

    # ------------------------------------------------------------ genes
    def show_top_genes(self) -> None:
        t = self.selected_token
        if t is None:
            return
        if self.summary is None:
            self._explain_then(self.show_top_genes)
            return
        markers = self.summary.markers
        sel = markers[markers["token"].astype(str) == str(t)]
        n = int((self.session.adata.obs[K.TOKEN_KEY] == t).sum())
        if sel.empty:
            self.genes_label.setText(f"<b>token {t}</b> ({n:,} cells): too few cells for a marker test")
            return
        parts = [f"{g} <span style='color:#999'>({lfc:+.1f})</span>" for g, lfc
                 in zip(sel["gene"], sel["logfoldchange"].fillna(0.0))]
        extra = ""
        summ = self.summary.summary
        if "top_cell_type" in summ.columns and t in summ.index:
            extra = (f"<br>mostly {summ.loc[t, 'top_cell_type']} "
                     f"({100 * summ.loc[t, 'top_cell_type_fraction']:.0f}%)")
        self.genes_label.setText(f"<b>token {t}</b> ({n:,} cells){extra}<br>top genes (log2 FC): "
                                 + ", ".join(parts))

    def _explain_then(self, then) -> None:
        explain = _explain()
        s = self.session
        if explain is None:
            self.genes_label.setText(_fallback_markers(s.adata, self.selected_token, layer=s.layer))
            return
        adata = s.adata
        cell_type_key = K.CELL_TYPE_KEY if K.CELL_TYPE_KEY in adata.obs else None

        def work():
            return explain.explain_tokens(adata, section_key=s.section_key, cell_type_key=cell_type_key,
                                          layer=s.layer, n_markers=10, method="t-test", copy=True)

        def done(summary):
            self.summary = summary
            self.set_status(f"{len(summary.summary)} tokens described (markers: t-test, token vs rest)")
            then()

        self.genes_label.setText("ranking genes per token…")
        self.run_job(work, desc="explaining tokens", on_done=done)

    # ---------------------------------------------------------- overview
    def describe_tokens(self) -> None:
        """Fill the overview table (describes every token first when needed)."""
        if not self.session.has_tokens:
            self.error(RuntimeError(_no_tokens_text(self.session)))
            return
        if self.summary is None:
            self._explain_then(self.fill_overview)
        else:
            self.fill_overview()

    def fill_overview(self) -> None:
        from napari_squint.tasks.token_table import token_overview

        table = token_overview(self.summary)
        self.overview_table = table
        _, cats, lut = token_colours(self.session.adata)
        colour = {c: lut[i] for i, c in enumerate(cats)}
        t = self.overview
        t.setRowCount(len(table))
        for r, (tok, row) in enumerate(table.iterrows()):
            cells = [f"token {tok}", f"{row['cells']:,} ({row['percent']:.1f}%)", row["top cell types"],
                     row["top genes"], row["sections"]]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(str(text))
                item.setToolTip(str(text))
                if c == 0:
                    item.setData(TOKEN_ROLE, tok)
                    if tok in colour:
                        pm = QPixmap(12, 12)
                        r_, g_, b_, _ = (np.asarray(colour[tok]) * 255).astype(int)
                        pm.fill(QColor(int(r_), int(g_), int(b_)))
                        item.setIcon(QIcon(pm))
                t.setItem(r, c, item)
        self.set_status(f"{len(table)} tokens described; click a row to select a token")

    def _overview_clicked(self, row: int) -> None:
        item = self.overview.item(row, 0)
        if item is not None:
            self.select_token(item.data(TOKEN_ROLE))

    def _ask_save_overview(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self, "Save the token overview", "tokens.csv", "CSV (*.csv)")
        if path:
            self.save_overview(path)

    def save_overview(self, path):
        """Write the overview table as CSV (atomic; never over a file napari-squint did not write)."""
        from napari_squint._napari.export import export_table

        try:
            out = export_table(self.overview_table, path, inputs=[self.session.source.get("path")])
        except Exception as err:
            self.error(err)
            return None
        self.set_status(f"token overview saved to {out}")
        return out

    def dot_plot(self) -> None:
        """Dot plot of the programme genes across the most used tokens (size: fraction expressing, colour: mean)."""
        s = self.session
        if not self.require_slide() or not s.has_tokens:
            if s.adata is not None:
                self.error(RuntimeError("no tokens yet: train or load a model"))
            return
        genes = [g for g in self.programme_edit.text().replace(",", " ").split() if g]
        explain = _explain()
        if explain is None:
            self.error(RuntimeError("the dot plot needs napari_squint.tasks.explain, which is not installed"))
            return
        adata, n_tok = s.adata, self.n_tokens_spin.value()
        rank = RANKS[self.rank_combo.currentText()]

        def work():
            if rank == "count":
                tokens = list(adata.obs[K.TOKEN_KEY].value_counts().index[:n_tok])
                return explain.programme_table(adata, genes, tokens=tokens, layer=s.layer, copy=True)
            table = explain.programme_table(adata, genes, layer=s.layer, min_cells=MIN_CELLS_RANKED, copy=True)
            keep = list(table.groupby("token", sort=False)["mean"].mean().sort_values(ascending=False).index[:n_tok])
            table = table[table["token"].isin(keep)].copy()
            table["_order"] = table["token"].map({t: i for i, t in enumerate(keep)})
            return table.sort_values("_order", kind="stable").drop(columns="_order")

        self.run_job(work, desc="programme dot plot", on_done=self._draw_dots)

    def _draw_dots(self, table: pd.DataFrame) -> None:
        from napari_squint.plot.tokens import plot_programme_dotplot

        self.dot_table = table
        self.dotplot.set_figure(plot_programme_dotplot(table))
        self.set_status(f"dot plot: {table['gene'].nunique()} genes × {table['token'].nunique()} tokens")


def _no_tokens_text(session) -> str:
    """Why there are no tokens: no model yet, or a CIFM model (which has none)."""
    if session.model_lacks_tokens:
        return (f"{session.model.label} has no tokens: its microenvironment embedding is in obsm['{K.CIFM_EMB_KEY}']; "
                "train a SQuINT model for tokens")
    return "no tokens yet: train or load a model"


def _fallback_markers(adata, token, *, layer=None, n: int = 10) -> str:
    """Top genes by mean log-normalised difference (used only while tasks.explain is missing)."""
    import scipy.sparse as sp

    x = adata.layers[layer] if layer else adata.X
    x = x.tocsr() if sp.issparse(x) else sp.csr_matrix(np.asarray(x))
    lib = np.asarray(x.sum(1)).ravel()
    norm = sp.diags(1e4 / np.maximum(lib, 1)) @ x
    norm.data = np.log1p(norm.data)
    m = (adata.obs[K.TOKEN_KEY] == token).to_numpy()
    diff = np.asarray(norm[m].mean(0)).ravel() - np.asarray(norm[~m].mean(0)).ravel()
    top = np.argsort(-diff)[:n]
    return f"<b>token {token}</b>: " + ", ".join(f"{adata.var_names[i]} ({diff[i]:+.2f})" for i in top)
