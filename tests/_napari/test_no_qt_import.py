"""Importing the engine loads no Qt, napari or magicgui; the widgets load no torch."""

from __future__ import annotations

import subprocess
import sys

GUI = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy")


def _loaded(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_engine_imports_no_gui():
    mods = _loaded("import napari_squint, napari_squint.api.squint, napari_squint.io.read\n"
                   "import pkgutil, importlib, napari_squint.tasks as t\n"
                   "[importlib.import_module(f'napari_squint.tasks.{m.name}') for m in pkgutil.iter_modules(t.__path__)]")
    bad = [m for m in mods if m.split(".")[0] in GUI]
    assert not bad, bad
    assert "napari_squint.tasks.explain" in mods


def test_widgets_do_not_import_torch():
    mods = _loaded("import napari_squint._napari.slide_widget, napari_squint._napari.tokens_widget, "
                   "napari_squint._napari.inpaint_widget, napari_squint._napari.activation_widget, "
                   "napari_squint._napari.perturb_widget, napari_squint._napari.launch")
    assert "torch" not in mods
    assert "qtpy" in mods


def test_cli_imports_no_gui():
    mods = _loaded("from napari_squint.cli.main import build_parser\nbuild_parser().parse_args(['view', 'x.h5ad'])")
    assert not [m for m in mods if m.split(".")[0] in GUI]


def test_building_the_docks_and_choosing_a_model_import_no_torch():
    """Importing torch holds the GIL for about a second: never on the GUI thread before training starts."""
    mods = _loaded("import os\nos.environ['QT_QPA_PLATFORM'] = 'offscreen'\nimport napari\n"
                   "v = napari.Viewer(show=False)\n"
                   "from napari_squint._napari.launch import add_docks\n"
                   "d = add_docks(v)\nd['Slide & model'].model_combo.setCurrentText('CIFM')\n"
                   "from napari_squint.config import CIFM_EPOCHS, SQUINT_EPOCHS\n"
                   "assert d['Slide & model'].options()['epochs'] == CIFM_EPOCHS != SQUINT_EPOCHS\nv.close()")
    assert "torch" not in mods
