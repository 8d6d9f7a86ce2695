"""napari-squint: discrete, interpretable cell tokens for spatial transcriptomics.

The package never imports napari, Qt or magicgui at import time; everything
Qt lives in :mod:`napari_squint._napari`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Squint", "Cifm", "read_slide", "make_tissue", "__version__"]


def __getattr__(name: str):  # lazy: keep `import napari_squint` cheap
    if name == "Squint":
        from napari_squint.api.squint import Squint

        return Squint
    if name == "Cifm":
        from napari_squint.api.cifm import Cifm

        return Cifm
    if name == "read_slide":
        from napari_squint.io.read import read_slide

        return read_slide
    if name == "make_tissue":
        from napari_squint.data.synthetic import make_tissue

        return make_tissue
    raise AttributeError(f"module 'napari_squint' has no attribute {name!r}")
