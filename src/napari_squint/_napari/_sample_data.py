"""npe2 sample data: the synthetic tissue, and the real MERFISH slide when it is on disk."""

from __future__ import annotations

import os
from pathlib import Path

#: environment variable pointing at the MERFISH .h5ad (or at the folder holding it)
MERFISH_ENV = "NAPARI_SQUINT_MERFISH"
MERFISH_FILE = "merfish_hypothalamus_moffitt2018_9sections.h5ad"


def merfish_path() -> Path | None:
    """The MERFISH file: ``$NAPARI_SQUINT_MERFISH``, else ``<repo>/../shared/data/<file>``; None when absent."""
    env = os.environ.get(MERFISH_ENV)
    candidates = []
    if env:
        p = Path(env)
        candidates.append(p / MERFISH_FILE if p.is_dir() else p)
    repo = Path(__file__).resolve().parents[3]
    candidates.append(repo.parent / "shared" / "data" / MERFISH_FILE)
    for c in candidates:
        if c.is_file():
            return c
    return None


def synthetic_tissue(n_cells: int = 4000, n_genes: int = 60, n_sections: int = 2, seed: int = 0) -> list[tuple]:
    """The synthetic tissue of :func:`napari_squint.data.synthetic.make_tissue` as cell layers."""
    from napari_squint._napari._reader import layers_for
    from napari_squint.data.synthetic import make_tissue

    adata = make_tissue(n_cells=n_cells, n_genes=n_genes, n_sections=n_sections, seed=seed)
    return layers_for(adata, source={"format": "synthetic", "params": f"make_tissue(n_cells={n_cells}, "
                                                                      f"n_genes={n_genes}, seed={seed})"})


def merfish_slide() -> list[tuple]:
    """The 9-section MERFISH hypothalamus slide (Moffitt et al. 2018) as cell layers."""
    from napari_squint._napari._reader import read_slide_layers

    path = merfish_path()
    if path is None:
        raise FileNotFoundError(f"{MERFISH_FILE} not found: set {MERFISH_ENV} to its path, or put it in "
                                "../shared/data beside the repository")
    return read_slide_layers(path)
