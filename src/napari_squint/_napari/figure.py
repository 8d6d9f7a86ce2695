"""A matplotlib figure embedded in a dock widget (``FigureCanvasQTAgg``)."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget


class FigurePanel(QWidget):
    """A figure that widgets redraw: ``panel.figure`` is a plain matplotlib Figure."""

    def __init__(self, *, width: float = 4.0, height: float = 3.0, dpi: int = 90, parent=None):
        super().__init__(parent)
        self.figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(int(height * dpi * 0.8))
        self._height = height * dpi
        self.table = None  #: callable giving the panel's table (a DataFrame) for "Save table…"
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        self.setVisible(False)  # shown by the first draw: no empty white box in the dock

    def clear(self) -> Figure:
        self.figure.clear()
        return self.figure

    def draw(self) -> None:
        self.setVisible(True)
        self.canvas.draw_idle()

    def set_figure(self, figure: Figure) -> None:
        """Show a figure made elsewhere (``napari_squint.plot``), e.g. with pyplot: it is detached from pyplot."""
        import matplotlib.pyplot as plt

        plt.close(figure)  # drop it from pyplot's registry (and any window pyplot made for it)
        try:  # re-fit the layout at the dock's size on every draw (it was fitted to the figure's own size)
            figure.set_layout_engine("tight")
        except (RuntimeError, ValueError):
            pass
        old = self.canvas
        self.figure = figure
        self.canvas = FigureCanvasQTAgg(figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(int(self._height * 0.8))
        self.layout().replaceWidget(old, self.canvas)
        old.setParent(None)
        old.deleteLater()
        self.draw()

    def has_content(self) -> bool:
        return bool(self.figure.axes)

    # ------------------------------------------------------------ export
    def export_row(self, dock, name: str, table=None) -> QWidget:
        """Buttons "Save figure…" and (when ``table()`` gives a DataFrame) "Save table…" for ``dock``."""
        from qtpy.QtWidgets import QHBoxLayout, QPushButton

        row = QWidget()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        fig_button = QPushButton("Save figure…")
        fig_button.setToolTip("PNG, SVG or PDF; never replaces a file napari-squint did not write")
        fig_button.clicked.connect(lambda *_: self._ask_figure(dock, name))
        lay.addWidget(fig_button)
        self.table = table
        if table is not None:
            tab_button = QPushButton("Save table…")
            tab_button.setToolTip("CSV; never replaces a file napari-squint did not write")
            tab_button.clicked.connect(lambda *_: self._ask_table(dock, name))
            lay.addWidget(tab_button)
        lay.addStretch(1)
        return row

    def _ask_figure(self, dock, name: str) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self, "Save the figure", f"{name}.png",
                                              "PNG (*.png);;SVG (*.svg);;PDF (*.pdf)")
        if path:
            self.save_figure(path, dock)

    def _ask_table(self, dock, name: str) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self, "Save the table", f"{name}.csv", "CSV (*.csv)")
        if path:
            self.save_table(path, dock)

    def save_figure(self, path, dock=None):
        """Write the figure (atomic; refuses files napari-squint did not write); returns the path or None."""
        from napari_squint._napari.export import export_figure

        return _report(dock, lambda: export_figure(self.figure, path, inputs=_inputs(dock)), "figure")

    def save_table(self, path, dock=None):
        """Write the panel's table as CSV (atomic; refuses files napari-squint did not write)."""
        from napari_squint._napari.export import export_table

        table = self.table() if self.table is not None else None
        return _report(dock, lambda: export_table(table, path, inputs=_inputs(dock)), "table")


def _inputs(dock) -> list:
    src = getattr(getattr(dock, "session", None), "source", None) or {}
    return [src.get("path")]


def _report(dock, write, what: str):
    try:
        out = write()
    except Exception as err:
        if dock is None:
            raise
        dock.error(err)
        return None
    if dock is not None:
        dock.set_status(f"{what} saved to {out}")
    return out
