"""tasks.token_table: one overview row per token."""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_squint.tasks.explain import explain_tokens
from napari_squint.tasks.token_table import token_overview


def test_every_token_gets_size_types_genes_and_sections():
    from napari_squint.data.synthetic import make_tissue

    a = make_tissue(n_cells=600, n_genes=40, n_sections=2, seed=3)
    ct = a.obs["cell_type"].astype(str).to_numpy()
    # tokens = cell types (so the top cell type of each token is known, 100%)
    a.obs["squint_token"] = pd.Categorical(pd.factorize(ct)[0])
    summary = explain_tokens(a, section_key="section", cell_type_key="cell_type", n_markers=5, method="t-test",
                             copy=True)
    table = token_overview(summary)
    assert len(table) == a.obs["squint_token"].nunique()
    assert table["cells"].sum() == a.n_obs and table["cells"].is_monotonic_decreasing
    for t, row in table.iterrows():
        expected = ct[a.obs["squint_token"].to_numpy() == t][0]
        assert row["top cell types"] == f"{expected} 100%"
        assert row["sections"].startswith(("1 of 2", "2 of 2"))
    assert (table["top genes"].str.len() > 0).any()
    assert np.isclose(table["percent"].sum(), 100, atol=0.1)
