"""The "Colour cells by" box of the Slide & model dock: a choice, its legend, and a caption on the canvas."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox

from napari_squint._napari.colouring import GENE, Legend, colour_by, colour_choices, draw_legend, legend_height
from napari_squint._napari.dock import set_combo
from napari_squint._napari.figure import FigurePanel


class ColourPanel(QGroupBox):
    """Colour every cell by a token, the activation score, any obs column or a gene, with its legend."""

    def __init__(self, dock):
        super().__init__("Colour cells by")
        self.dock = dock
        form = QFormLayout(self)
        form.setContentsMargins(6, 4, 6, 4)
        self.choice_combo = QComboBox()
        self.choice_combo.setToolTip("token, activation score, any cell annotation (obs column) or a gene")
        self.gene_combo = QComboBox()
        self.gene_combo.setEditable(True)
        self.gene_combo.setToolTip("measured expression; after in-painting, the imputed value inside the polygons")
        form.addRow("colour by", self.choice_combo)
        form.addRow("gene", self.gene_combo)
        self.legend_panel = FigurePanel(width=3.8, height=1.0)
        form.addRow(self.legend_panel)
        form.addRow(self.legend_panel.export_row(dock, "legend", table=self._table))
        self.choice_combo.activated.connect(lambda *_: self.apply())
        self.gene_combo.activated.connect(lambda *_: self._gene_chosen())

    def _table(self):
        legend = self.dock.session.legend
        return legend.table() if isinstance(legend, Legend) else None

    def refresh(self, what: str) -> None:
        s = self.dock.session
        if what in ("init", "slide", "tokens", "activation", "perturb", "impute", "model"):
            set_combo(self.choice_combo, colour_choices(s.adata), keep=True)
        if what in ("init", "slide") and s.adata is not None:
            set_combo(self.gene_combo, list(map(str, s.adata.var_names)), keep=True)
        if what == "colours":
            self.show_legend(s.legend)
        self.gene_combo.setEnabled(self.choice_combo.currentText() == GENE)

    def _gene_chosen(self) -> None:
        self.choice_combo.setCurrentText(GENE)
        self.apply()

    def colour(self, choice: str, gene: str | None = None) -> None:
        """Colour by ``choice`` (and ``gene``), as picking them in the combo boxes."""
        self.choice_combo.setCurrentText(choice)
        if gene is not None:
            self.gene_combo.setCurrentText(gene)
        self.apply()

    def apply(self) -> None:
        choice = self.choice_combo.currentText()
        self.gene_combo.setEnabled(choice == GENE)
        if not choice or self.dock.session.adata is None:
            return
        try:
            rgba, legend, values = colour_by(self.dock.session, choice, gene=self.gene_combo.currentText())
        except Exception as err:
            self.dock.error(err)
            return
        self.dock.colour_cells(rgba, legend=legend, values=values)

    def show_legend(self, legend) -> None:
        if not isinstance(legend, Legend):
            return
        fig = self.legend_panel.figure
        fig.set_size_inches(fig.get_size_inches()[0], legend_height(legend))
        draw_legend(fig, legend)
        self.legend_panel.canvas.setMinimumHeight(int(legend_height(legend) * fig.dpi))
        self.legend_panel.draw()
