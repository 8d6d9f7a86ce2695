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
