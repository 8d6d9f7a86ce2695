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


def test_token_table_holds_the_training_tokens_and_survives_saving(trained_tiny, tissue, tmp_path):
    import torch

    from napari_squint.api.squint import Squint

    table = trained_tiny.module.token_codes.cpu().numpy()
    used = trained_tiny.encode(trained_tiny.data)["codes"]
    assert trained_tiny.has_code_head
    assert {tuple(r) for r in table} == {tuple(r) for r in used}  # exactly the tokens training cells use
    assert trained_tiny.meta["code_head"]["code_head_accuracy"] > 0
    assert int(trained_tiny.module.token_counts.sum()) == trained_tiny.data.n_cells
    back = Squint.load(trained_tiny.save(tmp_path / "m"))
    assert torch.equal(back.module.token_codes.cpu(), trained_tiny.module.token_codes.cpu())
    # a checkpoint saved before the head existed loads without it (imputation falls back to the nearest code)
    from napari_squint.train.checkpoint import load_checkpoint, save_checkpoint

    state, config, genes, meta = load_checkpoint(tmp_path / "m")
    old = {k: v for k, v in state.items() if not k.startswith("code_head.") and not k.startswith("token_")}
    config["model"].pop("code_head", None)
    save_checkpoint(tmp_path / "old", state_dict=old, config=config, genes=genes, meta=meta)
    legacy = Squint.load(tmp_path / "old")
    assert legacy.module.code_head is None and not legacy.has_code_head


def test_impute_cells_mixture_and_draws(trained_tiny):
    import numpy as np
    import pytest

    data = trained_tiny.data
    masked = np.zeros(data.n_cells, bool)
    masked[:30] = True
    mean = trained_tiny.impute_cells(data, masked)
    mix = trained_tiny.code_mixture(data, masked, np.arange(30), top=4)
    np.testing.assert_allclose(mix["weights"].sum(1), 1.0, rtol=1e-5)
    assert mix["candidates"].shape == (30, 4)
    # the reported token is the most likely candidate, and the mean profile is the weighted mixture
    np.testing.assert_array_equal(mean["tokens"], mix["candidates"][np.arange(30), mix["weights"].argmax(1)])
    np.testing.assert_allclose(mean["imputed"].sum(1), mean["imputed"].sum(1)[0], rtol=1e-4)  # one library
    s1 = trained_tiny.impute_cells(data, masked, draw="sample", seed=1)
    s2 = trained_tiny.impute_cells(data, masked, draw="sample", seed=1)
    np.testing.assert_array_equal(s1["imputed"], s2["imputed"])  # seeded
    assert np.all(s1["imputed"] == np.round(s1["imputed"]))  # generated counts are integers
    # every drawn token is one of the training tokens
    table = {int(t) for t in trained_tiny.module.codebook.tokens(trained_tiny.module.token_codes).cpu().numpy()}
    assert set(s1["tokens"].tolist()) <= table
    with pytest.raises(ValueError, match="draw"):
        trained_tiny.impute_cells(data, masked, draw="median")


def test_impute_cells_logmean_uses_the_predictive_moments(trained_tiny):
    import numpy as np

    from napari_squint.nn.log_estimate import expected_log1p, moment_matched_theta

    data = trained_tiny.data
    masked = np.zeros(data.n_cells, bool)
    masked[:30] = True
    mean = trained_tiny.impute_cells(data, masked)
    lm = trained_tiny.impute_cells(data, masked, draw="logmean")
    np.testing.assert_allclose(lm["mean"], mean["imputed"])  # same prediction, another summary of it
    theta_c, _ = trained_tiny.dispersions()
    # the spread between the tokens of the mixture adds to the NB variance of each
    assert np.all(lm["var"] >= lm["mean"] + lm["mean"] ** 2 / theta_c - 1e-6)
    s = 1e4 / lm["library"][:, None]
    want = expected_log1p(lm["mean"], moment_matched_theta(lm["mean"], lm["var"]), s)
    np.testing.assert_allclose(np.log1p(s * lm["imputed"]), want, rtol=1e-6, atol=1e-9)
    assert np.all(lm["imputed"] <= mean["imputed"] + 1e-9)


def test_input_genes_narrows_the_encoder_to_the_most_variable_genes(tissue, tmp_path):
    """input_genes=N: the encoder reads the panel's N most variable training genes, the decoders every gene;
    a non-input gene's counts do not move a latent; the choice survives saving; older folders load."""
    import json

    import scipy.sparse as sp
    import torch
    from safetensors.torch import load_file, save_file

    from napari_squint.data.genes import most_variable
    from napari_squint.train.checkpoint import CHECKSUM_KEY, sha256_file

    opts = dict(epochs=1, batch_size=256, codebook_size=8, heads=1, latent=8, hidden=16, seed=0)
    m = Squint(tissue, input_genes=6, **opts)
    m.train()
    idx = m.module.input_idx.cpu().numpy()
    np.testing.assert_array_equal(idx, most_variable(m.data.counts, 6, batch=m.data.batch))
    assert m.module.enc_mlp[0].in_features == 6 and m.module.mask_token.shape == (6,)
    probs = m.encode(m.data, decode=True)["probs"]
    assert probs.shape == (m.data.n_cells, tissue.n_vars)  # every gene decoded
    # the latents read only the input genes: swap two other genes' counts (read depths unchanged), same latents
    o1, o2 = np.setdiff1d(np.arange(tissue.n_vars), idx)[:2]
    b = tissue.copy()
    X = b.X.toarray()
    X[:, [o1, o2]] = X[:, [o2, o1]]
    b.X = sp.csr_matrix(X)
    assert not np.array_equal(X, tissue.X.toarray())
    lat = m.encode(m.prepare(tissue))["latent"]
    np.testing.assert_allclose(m.encode(m.prepare(b))["latent"], lat, rtol=1e-4, atol=1e-5)
    # saved and loaded: same input genes, same latents
    m.save(tmp_path / "m")
    back = Squint.load(tmp_path / "m")
    np.testing.assert_array_equal(back.module.input_idx.cpu().numpy(), idx)
    np.testing.assert_allclose(back.encode(back.prepare(tissue))["latent"], lat, rtol=1e-5, atol=1e-6)
    # a folder written before the option existed (no input_idx, no input_genes) loads, reading every gene
    full = Squint(tissue, **opts)
    full.save(tmp_path / "old")
    w = load_file(tmp_path / "old" / "model.safetensors")
    del w["input_idx"]
    save_file(w, tmp_path / "old" / "model.safetensors")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    cfg["model"].pop("input_genes")
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    meta = json.loads((tmp_path / "old" / "meta.json").read_text())
    meta[CHECKSUM_KEY] = sha256_file(tmp_path / "old" / "model.safetensors")
    (tmp_path / "old" / "meta.json").write_text(json.dumps(meta))
    old = Squint.load(tmp_path / "old")
    assert old.config.model.input_genes is None and old.module.n_input == tissue.n_vars
    assert torch.equal(old.module.input_idx.cpu(), torch.arange(tissue.n_vars))
    with pytest.raises(ValueError, match="input_genes"):
        Squint(tissue, input_genes=0, **opts)
