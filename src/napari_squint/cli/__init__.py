"""The ``squint`` command line (one module per command)."""

from napari_squint.cli.main import build_parser, main

__all__ = ["main", "build_parser"]
