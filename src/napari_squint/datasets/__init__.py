"""Small real slides shipped inside the package.

:func:`merfish_hypothalamus` returns two adjacent sections of the MERFISH mouse
hypothalamic preoptic region (Moffitt et al. 2018, Science 362:eaau5324; data
on Dryad, doi:10.5061/dryad.8t8s248, CC0): 11,346 cells x 135 genes, raw
integer counts in a sparse CSR ``X``, ``obs['section']`` (Animal 1, Bregma
-0.24 and -0.19), ``obs['cell_type']`` (Moffitt's 9 coarse cell classes),
``obs['cell_type_fine']``, ``obs['region']`` and ``obsm['spatial']``
(micrometres, each section centred). Provenance and licence:
``LICENSE_merfish_hypothalamus.md`` next to the file; how it was cut:
``scripts/make_demo_data.py``. It is the data of ``squint demo``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["DEMO_FILE", "demo_path", "merfish_hypothalamus"]

#: file name of the shipped demo slide (inside this package)
DEMO_FILE = "merfish_hypothalamus_2sections.h5ad"


def demo_path() -> Path:
    """Path of the shipped demo slide (an error naming the file when the installation lacks it)."""
    path = Path(str(resources.files(__name__).joinpath(DEMO_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the demo slide is missing from this installation of napari-squint")
    return path


def merfish_hypothalamus():
    """The shipped two-section MERFISH hypothalamus slide as an AnnData (a fresh copy on every call)."""
    import anndata as ad

    path = demo_path()
    adata = ad.read_h5ad(path)
    adata.uns["squint_source"] = {"path": f"napari_squint.datasets.merfish_hypothalamus ({DEMO_FILE})"}
    return adata
