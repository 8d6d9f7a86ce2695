import numpy as np
import pandas as pd
import pytest

from napari_squint.api.squint import Squint


def test_tokens_writes_documented_keys(trained_tiny, tissue):
    a = tissue.copy()
    out = trained_tiny.tokens(a, copy=True)
    assert "squint_token" not in a.obs  # copy=True leaves the input alone
    assert isinstance(out.obs["squint_token"].dtype, pd.CategoricalDtype)
    assert out.obsm["squint_latent"].shape == (a.n_obs, 16)
    assert out.obsm["squint_codes"].shape == (a.n_obs, 2)
    assert out.uns["squint"]["tokens"]["params"]["key_added"] == "squint_token"
    assert int(out.obs["squint_token"].astype(int).max()) < 8**2


def test_holdout_cells_never_in_training(tissue):
    hold = np.zeros(tissue.n_obs, bool)
    hold[:200] = True
    m = Squint(tissue, holdout=hold, epochs=1, batch_size=256, codebook_size=8, heads=1, latent=8, hidden=16)
    assert not set(tissue.obs_names[:200]) & set(m.data.obs_names)
    assert m.data.n_cells == tissue.n_obs - 200
    # and their counts are not in any training microenvironment: change them, same training data
    import scipy.sparse as sp

    b = tissue.copy()
    X = b.X.toarray()
    X[:200] = 1000
    b.X = sp.csr_matrix(X)
    m2 = Squint(b, holdout=hold, epochs=1, batch_size=256, codebook_size=8, heads=1, latent=8, hidden=16)
    assert (m.data.x_nbr != m2.data.x_nbr).nnz == 0


def test_unknown_section_gets_unknown_batch(trained_tiny, tissue):
    a = tissue[tissue.obs["section"] == tissue.obs["section"].cat.categories[0]].copy()
    a.obs["section"] = "new_slide"
    data = trained_tiny.prepare(a)
    assert set(data.batch) == {len(trained_tiny.sections)}
    trained_tiny.tokens(a)


@pytest.mark.real_data
def test_end_to_end_on_two_merfish_sections(merfish_path):
    """Issue 2's end-to-end check: utilisation well above a collapsed codebook,
    and reconstruction of X_nbr clearly below a mean-profile baseline."""
    import anndata as ad

    a = ad.read_h5ad(merfish_path)
    secs = ["Animal1_Bregma_-0.14", "Animal1_Bregma_-0.09"]
    a = a[a.obs["section"].isin(secs)].copy()
    m = Squint(a, section_key="section", epochs=25, seed=0)
    m.train()
    stats = m.codebook_stats()
    rec = m.reconstruction_report()
    collapsed = 1 / m.config.model.codebook_size
    assert stats["utilisation"] > 10 * collapsed
    assert stats["tokens_used"] > 50
    assert rec["model_nb_nll"] < 0.97 * rec["mean_profile_nb_nll"]
    assert rec["deviance_explained"] > 0.2
