"""What every squint dock widget shares: the session, a status line, running jobs, showing cells."""

from __future__ import annotations

from functools import partial

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_squint._napari.hooks import attach
from napari_squint._napari.layers import apply_colours, cell_layer_data, cell_layers
from napari_squint._napari.workers import Job


class SquintDock(QWidget):
    """Base of the squint dock widgets.

    Subclasses add their controls to ``self.body`` and override
    :meth:`refresh` to react to session changes (``what`` is ``"slide"``,
    ``"model"``, ``"tokens"``, ``"pick"``, ``"saved"``...).
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = attach(napari_viewer)
        self.job: Job | None = None
        self.last_error: BaseException | None = None
        self._busy: list[QWidget] = []
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(6, 6, 6, 6)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.session.subscribe(self._on_session)
        self.destroyed.connect(partial(_forget, self.session, self._on_session))

    # ------------------------------------------------------------- layout
    def group(self, title: str) -> QFormLayout:
        box = QGroupBox(title)
        form = QFormLayout(box)
        form.setContentsMargins(6, 4, 6, 4)
        self.body.addWidget(box)
        return form

    def button(self, text: str, slot, *, busy: bool = True, tip: str = "") -> QPushButton:
        b = QPushButton(text)
        b.clicked.connect(lambda *_: slot())
        if tip:
            b.setToolTip(tip)
        if busy:
            self._busy.append(b)
        return b

    def finish_layout(self) -> None:
        self.body.addWidget(self.status)
        self.body.addStretch(1)
        self.refresh("init")

    # ------------------------------------------------------------ session
    def _on_session(self, what: str) -> None:
        try:
            self.refresh(what)
        except RuntimeError as err:  # the Qt object is gone
            if "deleted" in str(err):
                self.session.unsubscribe(self._on_session)
            else:
                raise

    def refresh(self, what: str) -> None:  # overridden
        pass

    def set_status(self, text: str) -> None:
        self.status.setText(text)

    def error(self, err: BaseException) -> None:
        """Show an error in the status line and as a napari notification."""
        self.last_error = err
        self.set_status(f"<span style='color:#e66'>{type(err).__name__}: {err}</span>")
        try:
            from napari.utils.notifications import show_error

            show_error(f"squint: {err}")
        except Exception:
            pass

    def require_slide(self) -> bool:
        if self.session.adata is None:
            self.error(RuntimeError("no slide: open one in the 'Slide & model' widget (or File > Open)"))
            return False
        return True

    def require_model(self) -> bool:
        if not self.require_slide():
            return False
        if self.session.model is None:
            self.error(RuntimeError("no model: train or load one in the 'Slide & model' widget"))
            return False
        return True

    # --------------------------------------------------------------- jobs
    def run_job(self, fn, *, desc: str, on_done, on_event=None, on_cancel=None, cancel_button=None) -> Job | None:
        """Run ``fn`` (engine work) through a :class:`Job`; controls are disabled meanwhile."""
        if self.job is not None and self.job.running:
            self.error(RuntimeError(f"busy: {self.job.desc} is still running"))
            return None
        self.last_error = None

        def done(result):
            try:
                on_done(result)
            except Exception as err:  # building layers failed: say so
                self.error(err)

        def cancelled():
            self.set_status(f"{desc}: cancelled")
            if on_cancel is not None:
                on_cancel()

        def finished():
            for w in self._busy:
                w.setEnabled(True)
            if cancel_button is not None:
                cancel_button.setEnabled(False)
            self.refresh("job")

        for w in self._busy:
            w.setEnabled(False)
        if cancel_button is not None:
            cancel_button.setEnabled(True)
        self.set_status(f"{desc}…")
        self.job = Job(fn, desc=desc, on_event=on_event, on_done=done, on_error=self.error, on_cancel=cancelled,
                       on_finish=finished)
        self.job.start()
        return self.job

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()

    # -------------------------------------------------------------- cells
    def cell_layers(self) -> list:
        return cell_layers(self.viewer, self.session.adata)

    def colour_cells(self, rgba: np.ndarray) -> None:
        """Colour every cell of the slide; the colours are kept for re-layouts."""
        self.session.colours = np.asarray(rgba, dtype=np.float32)
        layers = self.cell_layers()
        if not layers:
            show_cells(self.viewer, self.session)
        else:
            apply_colours(layers, self.session.colours)


def _forget(session, callback, *_):
    session.unsubscribe(callback)


def show_cells(viewer, session, *, layout: str | None = None, show_section: str | None = None) -> list:
    """(Re)build the cell layers of the session's slide; returns them."""
    from napari.layers import Layer

    if layout is not None:
        session.layout = layout
    for layer in cell_layers(viewer):
        viewer.layers.remove(layer)
    tuples = cell_layer_data(session.adata, section_key=session.section_key, spatial_key=session.spatial_key,
                             layout=session.layout, colours=session.colours, session_id=id(session),
                             source=session.source, show_section=show_section)
    layers = [Layer.create(data, kwargs, kind) for data, kwargs, kind in tuples]
    for layer in layers:
        viewer.add_layer(layer)
    viewer.reset_view()
    return layers


def set_combo(combo: QComboBox, items, *, current=None, keep: bool = True) -> None:
    """Replace a combo box's items, keeping the current text when still present."""
    old = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems([str(i) for i in items])
    want = current if current is not None else (old if keep else None)
    if want is not None:
        i = combo.findText(str(want))
        if i >= 0:
            combo.setCurrentIndex(i)
    combo.blockSignals(False)
