"""What every squint dock widget shares: the session, a status line, running jobs, showing cells."""

from __future__ import annotations

import time
from functools import partial

import numpy as np
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFormLayout,
    QFrame,
    QGroupBox,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from napari_squint._napari.canvas_legend import install_canvas_legend, show_caption
from napari_squint._napari.hooks import attach, guard_window, main_window_of, real_viewer
from napari_squint._napari.layers import apply_colours, cell_layer_data, cell_layers
from napari_squint._napari.session import CELLS_META
from napari_squint._napari.workers import Job, ProgressTracker


#: seconds between two redraws of a dock's progress during training steps
PROGRESS_INTERVAL = 0.25


class SquintDock(QWidget):
    """Base of the squint dock widgets.

    Subclasses add their controls to ``self.body`` and override
    :meth:`refresh` to react to session changes (``what`` is ``"slide"``,
    ``"model"``, ``"tokens"``, ``"pick"``, ``"saved"``...).

    The controls scroll inside the dock, so a tall dock never grows the
    window. Once docked (by ``squint view``, a script or the Plugins menu),
    the widget finds its main window through its Qt parents: it installs the
    session's close guard there and joins the other squint docks of the same
    area as a tab (:meth:`_tabify`).
    """

    #: minimum width of the dock's contents: labels wrap rather than clip below it
    MIN_WIDTH = 340

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = real_viewer(napari_viewer)
        self.session = attach(self.viewer)
        self.job: Job | None = None
        self.last_error: BaseException | None = None
        self._busy: list[QWidget] = []
        self._watched = None
        self._tab_pending = False
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        inner.setMinimumWidth(self.MIN_WIDTH)
        self.scroll.setWidget(inner)
        self.scroll.setMinimumWidth(self.MIN_WIDTH + 16)
        outer.addWidget(self.scroll)
        self.body = QVBoxLayout(inner)
        self.body.setContentsMargins(6, 6, 6, 6)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        #: the running job's progress, in the dock itself (hidden while idle)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(10)
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        self.progress.setVisible(False)
        self.progress_label.setVisible(False)
        self._tracker: ProgressTracker | None = None
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
        self.body.addWidget(self.progress_label)
        self.body.addWidget(self.progress)
        self.body.addWidget(self.status)
        self.body.addStretch(1)
        self.refresh("init")

    # ------------------------------------------------------------ docking
    def event(self, e):  # noqa: D102 (Qt override)
        if e.type() == QEvent.Type.ParentChange:
            self._watch_parent()
        return super().event(e)

    def eventFilter(self, obj, e):  # noqa: N802 (Qt name): the QDockWidget around us was (re)parented
        if obj is self._watched and e.type() == QEvent.Type.ParentChange:
            self._docked()
        return False

    def _watch_parent(self) -> None:
        parent = self.parentWidget()
        if parent is not None and parent is not self._watched:
            parent.installEventFilter(self)
            self._watched = parent
        self._docked()

    def dock_widget(self) -> QDockWidget | None:
        """The ``QDockWidget`` holding this widget, or None."""
        w = self.parentWidget()
        while w is not None and not isinstance(w, QDockWidget):
            w = w.parentWidget()
        return w

    def _docked(self) -> None:
        window = main_window_of(self)
        if window is None:
            return
        guard_window(self.session, window)
        install_canvas_legend(self.session, self.viewer, window)
        if not self._tab_pending:  # after napari has finished adding the dock (it may resize the area)
            self._tab_pending = True
            QTimer.singleShot(0, self._tabify)

    def _tabify(self) -> None:
        """Join the first other squint dock of the same area as a tab, and come to the front."""
        self._tab_pending = False
        try:
            window, mine = main_window_of(self), self.dock_widget()
        except RuntimeError:  # deleted meanwhile
            return
        if window is None or mine is None:
            return
        title = mine.windowTitle()
        if "&" in title and "&&" not in title:  # the tab bar reads "&" as a shortcut mark and hides it
            mine.setWindowTitle(title.replace("&", "&&"))
        if mine.isFloating():
            return
        area = window.dockWidgetArea(mine)
        tabbed = set(map(id, window.tabifiedDockWidgets(mine)))
        others = [d for d in window.findChildren(QDockWidget) if d is not mine and not d.isFloating()
                  and isinstance(d.widget(), SquintDock) and window.dockWidgetArea(d) == area]
        if others and not any(id(d) in tabbed for d in others):
            window.tabifyDockWidget(others[0], mine)
            mine.show()
            mine.raise_()
        _unelide_tabs(window)

    def bring_forward(self) -> None:
        """Make this dock the visible tab of its group."""
        dock = self.dock_widget()
        if dock is not None:
            dock.show()
            dock.raise_()

    # ------------------------------------------------------------ session
    def _on_session(self, what: str) -> None:
        try:
            if what in ("slide", "model") and self.last_error is not None and str(self.last_error).startswith(
                    ("no slide", "no model")):
                self.last_error = None  # what was missing is here now: the red line goes
                self.set_status("")
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

        shown = [0.0]

        def event(ev):
            state = self._tracker.update(ev)
            now = time.perf_counter()
            # a step every few ms would repaint (and re-layout) the dock as often: at most 4 times a second
            if getattr(ev, "stage", "") != "step" or now - shown[0] >= PROGRESS_INTERVAL:
                shown[0] = now
                self._show_progress(*state)
            if on_event is not None:
                on_event(ev)

        def finished():
            self._tracker = None
            self.progress.setVisible(False)
            self.progress_label.setVisible(False)
            for w in self._busy:
                w.setEnabled(True)
            if cancel_button is not None:
                cancel_button.setEnabled(False)
            self.refresh("job")

        for w in self._busy:
            w.setEnabled(False)
        if cancel_button is not None:
            cancel_button.setEnabled(True)
        self.set_status("")
        self._tracker = ProgressTracker(desc)
        self._show_progress(0, 0, f"{desc}…")
        self.job = Job(fn, desc=desc, on_event=event, on_done=done, on_error=self.error, on_cancel=cancelled,
                       on_finish=finished)
        self.job.start()
        return self.job

    def _show_progress(self, value: int, maximum: int, text: str) -> None:
        self.progress.setRange(0, maximum)
        if maximum:
            self.progress.setValue(value)
        self.progress_label.setText(text)
        self.progress.setVisible(True)
        self.progress_label.setVisible(True)

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()

    # -------------------------------------------------------------- cells
    def cell_layers(self) -> list:
        return cell_layers(self.viewer, self.session.adata)

    def colour_cells(self, rgba: np.ndarray, *, legend=None, values=None) -> None:
        """Colour every cell of the slide; kept for re-layouts.

        ``legend`` (:class:`~napari_squint._napari.colouring.Legend`) is
        drawn on the canvas (top right, with a caption bottom left) and in the Slide & model dock; ``values``
        (n,) are shown, with the cell's token, type and section, on hover.
        """
        s = self.session
        s.colours = np.asarray(rgba, dtype=np.float32)
        s.legend, s.colour_values = legend, values
        layers = self.cell_layers()
        if not layers:
            layers = show_cells(self.viewer, s)
        else:
            apply_colours(layers, s.colours)
            set_hover(layers, s)
        show_caption(self.viewer, legend)
        s.notify("colours")


def set_hover(layers, session) -> None:
    """Per-cell features napari shows in its status bar on hover (cell, section, token, type, value)."""
    from napari_squint._napari.colouring import hover_features

    name = session.legend.title if session.legend is not None else None
    for layer in layers:
        if layer.metadata[CELLS_META].get("raster"):
            continue
        cells = layer.metadata[CELLS_META]["cells"]
        layer.features = hover_features(session, cells, value_name=name, values=session.colour_values)


def _unelide_tabs(window) -> None:
    """Dock tabs show their whole titles and scroll when they do not fit (Qt elides them by default)."""
    from qtpy.QtWidgets import QTabBar

    for bar in window.findChildren(QTabBar):
        if bar.parent() is window:  # the main window's dock tab bars, not tabs inside widgets
            bar.setElideMode(Qt.TextElideMode.ElideNone)
            bar.setUsesScrollButtons(True)


def _forget(session, callback, *_):
    session.unsubscribe(callback)


def show_cells(viewer, session, *, layout: str | None = None, show_section: str | None = None) -> list:
    """(Re)build the cell layers of the session's slide; returns them."""
    from napari.layers import Layer

    if layout is not None:
        session.layout = layout
    remove_layers(viewer, cell_layers(viewer) + [lyr for lyr in viewer.layers if TITLES_META in lyr.metadata])
    tuples = cell_layer_data(session.adata, section_key=session.section_key, spatial_key=session.spatial_key,
                             layout=session.layout, colours=session.colours, session_id=id(session),
                             source=session.source, show_section=show_section)
    layers = [Layer.create(data, kwargs, kind) for data, kwargs, kind in tuples]
    titles = section_titles(layers)
    viewer.layers.extend(layers + ([titles] if titles is not None else []))  # one insertion pass
    set_hover(layers, session)
    if layers:
        viewer.layers.selection.active = layers[0]  # the cells, not the titles, under the layer controls
    viewer.reset_view()
    return layers


#: layer.metadata key of the section-title layer
TITLES_META = "squint_section_titles"


def section_titles(layers):
    """A Points layer with each section's name above it (one invisible point per section), or None."""
    from napari.layers import Points

    pos, names = [], []
    for layer in layers:
        if not layer.visible:
            continue
        info = layer.metadata[CELLS_META]
        x0, y0, x1, y1 = info["bounds"]
        dy, dx = info["offset"]
        pos.append([y0 + dy - 0.02 * (y1 - y0), (x0 + x1) / 2 + dx])
        names.append(str(info["section"]))
    if not pos:
        return None
    return Points(np.asarray(pos), name="section titles", size=0, features={"section": names},
                  text={"string": "{section}", "color": "white", "size": 10, "anchor": "center"},
                  metadata={TITLES_META: True}, face_color="transparent", border_width=0)


def remove_layers(viewer, layers) -> None:
    """Remove layers in one batch (napari runs a full garbage collection once per batch, not per layer)."""
    layers = list(layers)
    if not layers:
        return
    batch = getattr(viewer.layers, "batched_update", None)
    if batch is None:
        for layer in layers:
            viewer.layers.remove(layer)
        return
    with batch():
        for layer in layers:
            viewer.layers.remove(layer)


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


class RegionPicker(QWidget):
    """Choose the Shapes or Labels layer that holds a region, or add a new Shapes layer to draw on."""

    def __init__(self, viewer, *, default_name: str, labels: bool = True, parent=None):
        from qtpy.QtWidgets import QHBoxLayout

        super().__init__(parent)
        self.viewer, self.default_name, self.labels = viewer, default_name, labels
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setToolTip("Shapes layer (polygons, rectangles, ellipses)" + (" or Labels layer (painted)"
                                                                               if labels else ""))
        self.new_button = QPushButton("Draw new")
        self.new_button.setToolTip("add a Shapes layer in polygon mode")
        self.new_button.clicked.connect(lambda *_: self.new_layer())
        lay.addWidget(self.combo, 1)
        lay.addWidget(self.new_button)
        self._choose_text = "(choose a layer)"
        viewer.layers.events.inserted.connect(self._refill)
        viewer.layers.events.removed.connect(self._refill)
        self._refill()

    def _candidates(self) -> list:
        from napari.layers import Labels, Shapes

        kinds = (Shapes, Labels) if self.labels else (Shapes,)
        return [lyr for lyr in self.viewer.layers if isinstance(lyr, kinds)]

    def _refill(self, *_):
        """The Shapes/Labels layers, after an explicit "(choose a layer)": a region is never picked silently."""
        try:
            set_combo(self.combo, [self._choose_text, *[lyr.name for lyr in self._candidates()]], keep=True)
        except RuntimeError:  # widget deleted
            pass

    def layer(self):
        name = self.combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def choose(self, layer) -> None:
        """Make ``layer`` the region layer (as picking it in the list)."""
        self.combo.setCurrentText(layer.name)

    def new_layer(self):
        """Add an empty Shapes layer named after the task and select it for drawing polygons."""
        layer = self.viewer.add_shapes(name=self.default_name, edge_color="#ffd23f", face_color=[1, 0.82, 0.25, 0.15],
                                       edge_width=max(1.0, _edge_width(self.viewer)))
        layer.mode = "add_polygon"
        self.combo.setCurrentText(layer.name)
        return layer


def _edge_width(viewer) -> float:
    from napari_squint._napari.layers import cell_layers as _cells

    layers = _cells(viewer)
    return 0.5 * layers[0].metadata[CELLS_META]["spacing"] if layers else 1.0


def region_mask(session, viewer, layer) -> tuple[np.ndarray, list]:
    """(n,) cells inside a Shapes / Labels layer's region, and the regions (Shapes only) in slide coordinates."""
    from napari.layers import Labels

    from napari_squint._napari.layers import cells_in_labels, shapes_to_regions
    from napari_squint.io.geojson import cells_in_regions

    if layer is None:
        raise ValueError("no region layer chosen: pick the Shapes or Labels layer holding the region, or "
                         "'Draw new' and draw a polygon")
    layers = cell_layers(viewer, session.adata)
    if isinstance(layer, Labels):
        return cells_in_labels(layer, layers, session.adata.n_obs), []
    regions = shapes_to_regions(layer, layers, name_prefix=layer.name.replace(" ", "_"))
    if not regions:
        raise ValueError(f"layer {layer.name!r} holds no polygon: draw one (polygon, rectangle or ellipse)")
    mask = cells_in_regions(session.adata, regions, section_key=session.section_key, spatial_key=session.spatial_key)
    return mask, regions
