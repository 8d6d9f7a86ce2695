"""The manifest: every python_name imports, and npe2 validates it."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _manifest() -> dict:
    return yaml.safe_load((ROOT / "napari.yaml").read_text())


def test_every_python_name_imports():
    commands = _manifest()["contributions"]["commands"]
    assert len(commands) == 9
    for cmd in commands:
        module, attr = cmd["python_name"].split(":")
        obj = getattr(importlib.import_module(module), attr)
        assert callable(obj), cmd["python_name"]


def test_npe2_validates_the_manifest():
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(ROOT / "napari.yaml")
    pm.validate_imports()
    assert pm.name == "napari-squint"
    assert {w.display_name for w in pm.contributions.widgets} == {"Slide & model", "Tokens", "In-paint",
                                                                  "Activation score", "Perturb"}
    assert {s.key for s in pm.contributions.sample_data} == {"synthetic", "merfish"}


def test_packaged_manifest_is_the_top_level_one():
    packaged = ROOT / "src" / "napari_squint" / "napari.yaml"
    assert packaged.resolve() == (ROOT / "napari.yaml").resolve()
    from npe2 import PluginManifest

    assert PluginManifest.from_distribution("napari-squint").name == "napari-squint"


def test_every_command_is_used_and_every_contribution_has_a_command():
    m = _manifest()
    ids = {c["id"] for c in m["contributions"]["commands"]}
    used = set()
    for section in ("readers", "writers", "sample_data", "widgets"):
        for entry in m["contributions"].get(section, []):
            assert entry["command"] in ids, entry
            used.add(entry["command"])
    assert used == ids
