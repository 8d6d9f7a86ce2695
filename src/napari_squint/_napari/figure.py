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
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)

    def clear(self) -> Figure:
        self.figure.clear()
        return self.figure

    def draw(self) -> None:
        self.canvas.draw_idle()

    def has_content(self) -> bool:
        return bool(self.figure.axes)
