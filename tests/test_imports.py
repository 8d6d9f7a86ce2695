import subprocess
import sys


def test_engine_imports_no_qt():
    code = (
        "import sys, napari_squint, napari_squint.api.squint, napari_squint.cli.main, napari_squint.tasks.demo\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6', 'magicgui')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_squint_command_help():
    r = subprocess.run([sys.executable, "-m", "napari_squint.cli.main", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("train", "tokens", "demo"):
        assert cmd in r.stdout
