"""The colour key on the canvas: the legend, top right, and a one-line caption, bottom left.

The legend is the one the Slide & model dock draws (:func:`~napari_squint._napari.colouring.draw_legend`),
rendered in light text to an image and shown in a small translucent ``QLabel``
that is a child of the viewer canvas's Qt widget (as napari's own welcome
screen is). It lets every mouse event through to the canvas (picking, hover
and drawing are unchanged), follows the canvas's size, shows the session's
current legend whenever the colours change and hides when nothing is
coloured. The canvas widget is found through Qt from the main window the dock
is parented to, never through napari's private attributes.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from qtpy.QtCore import QEvent, Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel

from napari_squint._napari.colouring import Legend, draw_legend, legend_height, short_label

#: Qt object name of the legend label (one per canvas)
OBJECT_NAME = "squint_canvas_legend"
#: most categories listed on the canvas (the dock and the CSV export list more)
MAX_ITEMS = 24
#: pixels between the legend and the canvas's edges
MARGIN = 8
#: dots per inch of the rendered legend (before the screen's device pixel ratio)
DPI = 110
#: inches a character of a 7-point label takes (a generous mean), and the width of a colour bar
CHAR_WIDTH = 0.062
BAR_WIDTH = 2.6


def show_caption(viewer, legend) -> None:
    """One line on the canvas saying what the colours are (napari's text overlay); hidden without colours."""
    overlay = viewer.text_overlay
    if legend is None:
        overlay.visible = False
        return
    overlay.text = legend.caption()
    overlay.font_size = 10
    overlay.color = "white"
    overlay.position = "bottom_left"
    overlay.visible = True


def legend_image(legend: Legend, *, dpi: float = DPI, max_items: int = MAX_ITEMS) -> np.ndarray:
    """The legend drawn in light text on a transparent background: (h, w, 4) uint8 RGBA."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if legend.categorical:
        n = min(len(legend.labels), max_items)
        chars = max([len(f"{short_label(x)} ({c:,})") for x, c in zip(legend.labels[:n], legend.counts[:n])],
                    default=0)
        width = max((1 if n <= 12 else 2) * (0.3 + CHAR_WIDTH * chars), 0.2 + 1.2 * CHAR_WIDTH * len(legend.title))
    else:
        width = BAR_WIDTH
    fig = Figure(figsize=(width, legend_height(legend, max_items=max_items)), dpi=dpi)
    fig.patch.set_alpha(0.0)
    canvas = FigureCanvasAgg(fig)
    draw_legend(fig, legend, max_items=max_items, fg="white")
    canvas.draw()
    img = np.asarray(canvas.buffer_rgba(), dtype=np.uint8)
    rows, cols = np.nonzero(img[..., 3].any(axis=1))[0], np.nonzero(img[..., 3].any(axis=0))[0]
    if rows.size == 0:
        return img.copy()
    pad = int(round(dpi * 0.04))  # what is drawn, with a thin margin: no empty band on the canvas
    return img[max(0, rows[0] - pad):rows[-1] + pad + 1, max(0, cols[0] - pad):cols[-1] + pad + 1].copy()


class CanvasLegend(QLabel):
    """The session's legend over the top-right corner of the canvas; transparent for the mouse."""

    def __init__(self, canvas, session, viewer):
        super().__init__(canvas)
        self.setObjectName(OBJECT_NAME)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, True)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setStyleSheet("QLabel#%s { background-color: rgba(16, 16, 16, 200); border: 1px solid "
                           "rgba(255, 255, 255, 70); border-radius: 4px; padding: 4px; }" % OBJECT_NAME)
        self.session, self.viewer = session, viewer
        self.legend: Legend | None = None
        self._image: QImage | None = None
        canvas.installEventFilter(self)
        session.subscribe(self._on_session)
        self.destroyed.connect(partial(_forget, session, self._on_session))
        self.show_legend(session.legend)

    def show_legend(self, legend) -> None:
        """Draw ``legend`` (a :class:`Legend`) on the canvas, or hide the label when it is None."""
        self.legend = legend if isinstance(legend, Legend) else None
        if self.legend is None:
            self._image = None
            self.clear()
            self.setAccessibleDescription("")
            self.hide()
            return
        ratio = max(1.0, float(self.devicePixelRatioF()))
        rgba = legend_image(self.legend, dpi=DPI * ratio)
        h, w = rgba.shape[:2]
        image = QImage(rgba.tobytes(), w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()  # own its pixels
        image.setDevicePixelRatio(ratio)
        self._image = image
        self.setAccessibleName("colour legend")
        self.setAccessibleDescription("\n".join(self.legend.lines(max_items=MAX_ITEMS)))
        self.show()
        self.raise_()
        self.place()

    def place(self) -> None:
        """Fit the legend into the canvas (scaled down when the canvas is small) and anchor it top right."""
        canvas = self.parentWidget()
        if self._image is None or canvas is None:
            return
        ratio = self._image.devicePixelRatio()
        pad = 2 * 5  # padding and border of the style sheet
        room_w = max(40, canvas.width() - 2 * MARGIN - pad)
        room_h = max(30, canvas.height() - 2 * MARGIN - pad)
        w, h = self._image.width() / ratio, self._image.height() / ratio
        scale = min(1.0, room_w / w, room_h / h)
        pixmap = QPixmap.fromImage(self._image)
        if scale < 1.0:
            pixmap = pixmap.scaled(int(self._image.width() * scale), int(self._image.height() * scale),
                                   Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
            pixmap.setDevicePixelRatio(ratio)
        self.setPixmap(pixmap)
        self.adjustSize()
        self.move(max(0, canvas.width() - self.width() - MARGIN), MARGIN)

    def eventFilter(self, obj, event):  # noqa: N802 (Qt name): the canvas was resized
        if obj is self.parentWidget() and event.type() == QEvent.Type.Resize:
            self.place()
        return False

    def _on_session(self, what: str) -> None:
        if what not in ("colours", "slide"):
            return
        try:
            self.show_legend(self.session.legend)
        except RuntimeError as err:  # the label (or the canvas) is gone
            if "deleted" not in str(err):
                raise
            self.session.unsubscribe(self._on_session)
            return
        show_caption(self.viewer, self.session.legend)  # a new slide starts uncoloured: no stale caption


def canvas_widget(window):
    """The viewer canvas's Qt widget in a napari main window (the OpenGL widget of its central area), or None."""
    from qtpy.QtOpenGLWidgets import QOpenGLWidget

    central = window.centralWidget() if window is not None else None
    if central is None:
        return None
    found = central.findChildren(QOpenGLWidget)
    return max(found, key=lambda w: w.width() * w.height()) if found else None


def canvas_legend(window):
    """The :class:`CanvasLegend` on a main window's canvas, or None."""
    canvas = canvas_widget(window)
    label = canvas.findChild(QLabel, OBJECT_NAME) if canvas is not None else None
    return label if isinstance(label, CanvasLegend) else None


def install_canvas_legend(session, viewer, window):
    """Put the session's legend on ``window``'s canvas (once per canvas); returns the label or None."""
    canvas = canvas_widget(window)
    if canvas is None:
        return None
    label = canvas.findChild(QLabel, OBJECT_NAME)
    if isinstance(label, CanvasLegend) and label.session is session:
        return label
    if label is not None:  # another session's: start afresh
        label.setObjectName("")
        label.hide()
        label.deleteLater()
    return CanvasLegend(canvas, session, viewer)


def _forget(session, callback, *_):
    session.unsubscribe(callback)
