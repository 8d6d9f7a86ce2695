"""Build the demo slide shipped inside the package (``napari_squint/datasets/merfish_hypothalamus_2sections.h5ad``).

Two adjacent sections of the MERFISH hypothalamic preoptic region (Moffitt et al. 2018, Animal 1, Bregma -0.24 and
-0.19; raw integer counts of the 135 combinatorial genes) taken from ``../shared/data`` (see the README there and
``src/napari_squint/datasets/LICENSE_merfish_hypothalamus.md``). Run from the repository root::

    .venv/bin/python scripts/make_demo_data.py ../shared/data/merfish_hypothalamus_moffitt2018_9sections.h5ad
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

SECTIONS = ["Animal1_Bregma_-0.24", "Animal1_Bregma_-0.19"]
OUT = Path(__file__).resolve().parents[1] / "src" / "napari_squint" / "datasets" / "merfish_hypothalamus_2sections.h5ad"


def main(path: str) -> None:
    src = ad.read_h5ad(path)
    keep = src.obs["section"].astype(str).isin(SECTIONS).to_numpy()
    sub = src[keep]
    x = sp.csr_matrix(sub.X)
    assert np.issubdtype(x.dtype, np.integer) and (x.data >= 0).all()
    obs = pd.DataFrame({
        "section": pd.Categorical(sub.obs["section"].astype(str), categories=SECTIONS),
        "cell_type": pd.Categorical(sub.obs["cell_type_coarse"].astype(str)),
        "cell_type_fine": pd.Categorical(sub.obs["cell_type"].astype(str)),
        "region": pd.Categorical(sub.obs["region"].astype(str)),
    }, index=sub.obs_names.astype(str))
    out = ad.AnnData(X=x.astype(np.int32), obs=obs, var=pd.DataFrame(index=sub.var_names.astype(str)))
    out.obsm["spatial"] = np.asarray(sub.obsm["spatial"], dtype=np.float32)
    out.uns["source"] = (
        "Moffitt JR, Bambah-Mukku D, et al. (2018) Science 362:eaau5324, MERFISH mouse hypothalamic preoptic region, "
        "Dryad doi:10.5061/dryad.8t8s248 (CC0). Animal 1, Bregma -0.24 and -0.19: raw integer counts of the 135 "
        "combinatorial genes, recovered from the volume-normalised values of senlin-lin/SpatialZ "
        "data/merfish/merfish_{19,24}_paste.h5ad; coordinates in micrometres, each section centred. "
        "cell_type = Moffitt cell class (coarse), cell_type_fine = numbered subclass.")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(OUT, compression="gzip", compression_opts=9)
    print(out, f"\nwrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/merfish_hypothalamus_moffitt2018_9sections.h5ad")
