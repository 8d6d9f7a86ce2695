"""Every manifest widget docked the way napari's Plugins menu does it: ``add_plugin_dock_widget``.

napari hands these widgets a ``PublicOnlyProxy`` of the viewer (a new one per
widget); the widgets must work on the viewer behind it, share one session, fit
in one tab group and guard closing without touching napari's private API.
"""

from __future__ import annotations

import warnings

import npe2
import pytest
from qtpy.QtWidgets import QApplication

from napari_squint._napari.dock import SquintDock
from napari_squint._napari.hooks import main_window_of
from napari_squint._napari.session import get_session

PLUGIN = "napari-squint"


def _names() -> list[str]:
    pm = npe2.PluginManager.instance()
    pm.discover()
    return [w.display_name for w in pm.get_manifest(PLUGIN).contributions.widgets]


NAMES = _names()


def _dock(viewer, name):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        QApplication.processEvents()  # the deferred tabify
    private = [w for w in caught if "Private attribute access" in str(w.message)]
    assert not private, [str(w.message) for w in private]
    return dock, widget


def test_manifest_names_the_five_docks():
    assert NAMES == ["Slide & model", "In-paint", "Tokens", "Activation score", "Perturb"]


@pytest.mark.parametrize("name", NAMES)
def test_each_widget_docks_alone_from_the_plugins_menu(make_napari_viewer, name):
    viewer = make_napari_viewer()
    dock, widget = _dock(viewer, name)
    assert isinstance(widget, SquintDock)
    assert widget.viewer is viewer  # the proxy is unwrapped: one session per viewer
    assert widget.session is get_session(viewer)
    assert widget.dock_widget() is dock
    assert main_window_of(widget) is not None
    guard = widget.session._close_guard
    assert guard is not None and guard.parent() is main_window_of(widget)


ORDERS = [NAMES, NAMES[::-1], [NAMES[2], NAMES[4], NAMES[0], NAMES[3], NAMES[1]]]


@pytest.mark.parametrize("order", ORDERS, ids=["manifest", "reversed", "mixed"])
def test_all_widgets_dock_together_in_any_order_as_one_tab_group(make_napari_viewer, order):
    viewer = make_napari_viewer()
    pairs = [_dock(viewer, name) for name in order]
    widgets = [w for _, w in pairs]
    assert len({id(w.session) for w in widgets}) == 1
    window = main_window_of(widgets[0])
    docks = [d for d, _ in pairs]
    for d in docks:
        others = {id(x) for x in window.tabifiedDockWidgets(d)}
        assert others == {id(x) for x in docks if x is not d}, d.windowTitle()
    # the "&" survives the tab bar (which reads a single "&" as a shortcut mark)
    slide = next(d for d in docks if d.windowTitle().startswith("Slide"))
    assert slide.windowTitle().startswith("Slide && model")
    # a second request returns the same widget (napari's behaviour), still one session
    again = viewer.window.add_plugin_dock_widget(PLUGIN, order[0])[1]
    assert again is widgets[0]


def test_a_slide_opened_in_one_dock_reaches_the_others(make_napari_viewer, tissue):
    viewer = make_napari_viewer()
    _, slide = _dock(viewer, "Slide & model")
    _, perturb = _dock(viewer, "Perturb")
    slide.session.set_slide(tissue, source={"format": "synthetic"})
    slide.show_cells()
    assert perturb.session.adata is tissue
    assert perturb.key_combo.count() > 0


def test_closing_asks_when_docked_from_the_plugins_menu(make_napari_viewer, tissue):
    viewer = make_napari_viewer()
    _, widget = _dock(viewer, "Tokens")
    s = widget.session
    s.set_slide(tissue, source={"format": "synthetic"})
    s.mark_changed("tokens")
    asked = []
    s.ask_on_close = lambda sess: asked.append(sess) or "cancel"
    window = main_window_of(widget)
    assert window.close() is False
    assert asked == [s]
    s.ask_on_close = lambda sess: "discard"
    assert window.close() is True
    s.dirty = False
