"""Wire a session to its viewer: adopt slides added as layers, pick cells by clicking, guard closing.

:func:`attach` is called by every squint widget (idempotent per viewer).

napari hands a widget opened from the Plugins menu a ``PublicOnlyProxy`` of
the viewer (a ``wrapt.ObjectProxy``), a new proxy per widget. The widgets work
on the viewer behind it (:func:`real_viewer`, wrapt's public ``__wrapped__``):
one session per viewer whatever route docked a widget, no proxy in Qt calls,
and no per-access frame inspection by the proxy. Nothing here reads napari's
private attributes: the close guard is installed on the main window that the
dock widget itself is parented to (:func:`guard_window`), found through Qt.
"""

from __future__ import annotations

import os

import numpy as np
from qtpy.QtCore import QEvent, QObject

from napari_squint._napari.layers import cell_layers, is_cell_layer, pick_cell
from napari_squint._napari.session import ADATA_META, CELLS_META, SESSION_META, SOURCE_META, Session, get_session

#: what to do with unsaved work when the viewer closes without asking: "ask" (default), "discard", "save", "cancel"
ON_CLOSE_ENV = "NAPARI_SQUINT_ON_CLOSE"

_ATTACHED: set[int] = set()


def real_viewer(viewer):
    """The viewer behind napari's ``PublicOnlyProxy`` (the viewer itself when it is not proxied)."""
    while True:
        inner = getattr(viewer, "__wrapped__", None)
        if inner is None or inner is viewer:
            return viewer
        viewer = inner


def attach(viewer) -> Session:
    """The viewer's session, hooked to its layers and mouse (once per viewer, whatever proxy it comes in)."""
    viewer = real_viewer(viewer)
    session = get_session(viewer)
    if id(session) in _ATTACHED:
        return session
    _ATTACHED.add(id(session))
    for layer in list(viewer.layers):
        adopt_layer(session, layer)
    viewer.layers.events.inserted.connect(lambda event: adopt_layer(session, event.value))
    viewer.mouse_drag_callbacks.append(_click_picker(session))
    return session


def main_window_of(widget):
    """The ``QMainWindow`` a (docked) widget lives in, through Qt parents; None while it is not docked."""
    from qtpy.QtWidgets import QMainWindow

    w = widget
    while w is not None:
        if isinstance(w, QMainWindow):
            return w
        w = w.parentWidget()
    return None


def guard_window(session: Session, window) -> None:
    """Install the session's close guard on ``window`` (a real ``QMainWindow``; once per window)."""
    guard = session._close_guard
    if guard is not None:
        try:
            if guard.parent() is window:
                return
        except RuntimeError:  # the old window (and its guard) was deleted
            pass
    guard = CloseGuard(session, window)
    window.installEventFilter(guard)
    session._close_guard = guard  # keep a reference with the session; Qt owns it through the window


def adopt_layer(session: Session, layer) -> None:
    """Make the slide behind a cell layer (from the reader or sample data) the session's slide."""
    if not is_cell_layer(layer):
        return
    meta = layer.metadata
    adata = meta[ADATA_META]
    if session.adata is not adata:
        info = meta[CELLS_META]
        session.set_slide(adata, source=meta.get(SOURCE_META) or None, section_key=info["section_key"],
                          spatial_key=info["spatial_key"])
        session.layout = info["layout"]
    meta[SESSION_META] = id(session)


def _click_picker(session: Session):
    def on_click(viewer, event):
        start = np.asarray(event.position)
        yield
        moved = False
        while event.type == "mouse_move":
            moved = moved or np.linalg.norm(np.asarray(event.position) - start) > 0
            yield
        if moved:
            return
        active = viewer.layers.selection.active
        if active is not None and getattr(active, "mode", "pan_zoom") not in ("pan_zoom", "transform"):
            return
        pick_at(session, viewer, start)

    return on_click


def pick_at(session: Session, viewer, world_position) -> int | None:
    """Pick the cell under a world position; the session tells the widgets (``"pick"``)."""
    for layer in reversed(cell_layers(viewer, session.adata)):
        cell = pick_cell(layer, world_position)
        if cell is not None:
            session.picked = cell
            session.notify("pick")
            return cell
    return None


def close_decision(session: Session, parent=None) -> str:
    """``"save"``, ``"discard"`` or ``"cancel"`` for closing with unsaved work."""
    if session.ask_on_close is not None:
        return session.ask_on_close(session)
    env = os.environ.get(ON_CLOSE_ENV, "ask").strip().lower()
    if env in ("discard", "save", "cancel"):
        return env
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Unsaved squint results")
    box.setText("This session has results that were not saved (tokens, scores, imputed cells, regions).")
    box.setInformativeText("Save them into the slide's SpatialData store before closing?")
    box.setStandardButtons(QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                           | QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Save)
    answer = box.exec()
    return {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}.get(
        QMessageBox.StandardButton(answer), "cancel")


class CloseGuard(QObject):
    """Event filter on the main window: unsaved work is saved, discarded or the close cancelled."""

    def __init__(self, session: Session, window):
        super().__init__(window)
        self.session = session

    def eventFilter(self, obj, event):  # noqa: N802 (Qt name)
        if event.type() != QEvent.Type.Close or not self.session.dirty or self.session.adata is None:
            return False
        decision = close_decision(self.session, parent=obj)
        if decision == "save":
            return not self._save(obj, event)
        if decision == "cancel":
            event.ignore()
            return True
        return False

    def _save(self, parent, event) -> bool:
        from napari_squint._napari.persist import default_target, save_results

        target = default_target(self.session)
        if target is None:
            from qtpy.QtWidgets import QFileDialog

            name, _ = QFileDialog.getSaveFileName(parent, "Save squint results", "results.zarr",
                                                  "SpatialData (*.zarr);;AnnData (*.h5ad)")
            if not name:
                event.ignore()
                return False
            target = name
        try:
            save_results(self.session, target)
        except Exception as err:  # keep the window open: nothing is lost
            from napari.utils.notifications import show_error

            show_error(f"could not save squint results: {err}")
            event.ignore()
            return False
        return True
