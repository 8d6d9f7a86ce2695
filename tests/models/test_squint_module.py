import numpy as np
import torch

from napari_squint.data.batch import make_batch
from napari_squint.data.prepare import GraphConfig, prepare_slide
from napari_squint.models.squint import SquintModule
from napari_squint.config import ModelConfig


def _data(tissue):
    return prepare_slide(tissue, tissue.var_names.tolist(), section_key="section", spatial_key="spatial",
                         graph=GraphConfig(k=6, max_degree=12, n_rbf=8))


def test_forward_shapes_and_losses(tissue):
    data = _data(tissue)
    cfg = ModelConfig(hidden=32, latent=16, codebook_size=8, heads=2)
    mod = SquintModule(data.n_genes, len(data.sections), 8, cfg)
    b = make_batch(data, np.arange(100), masked=np.zeros(data.n_cells, bool))
    out = mod(b)
    assert out["latent"].shape == (100, 16) and out["codes"].shape == (100, 2)
    for key in ("nb_loss", "nb_cell_loss", "adj_loss", "code_loss", "commit_loss"):
        assert torch.isfinite(out[key]), key
    out["nb_loss"].backward()
    assert mod.mask_token.grad is None or torch.all(mod.mask_token.grad == 0)  # nothing masked


def test_masked_nodes_see_the_mask_token(tissue):
    data = _data(tissue)
    cfg = ModelConfig(hidden=32, latent=16, codebook_size=8, heads=1)
    mod = SquintModule(data.n_genes, len(data.sections), 8, cfg).eval()
    masked = np.zeros(data.n_cells, bool)
    masked[:50] = True
    b = make_batch(data, np.arange(50), masked=masked)
    x = mod.masked_input(b.x_in, b.masked)
    assert torch.all(x[b.masked] == mod.mask_token)
    assert torch.equal(x[~b.masked], b.x_in[~b.masked])
    # a masked cell's latent does not depend on its own counts
    data2 = data.replace_counts(np.arange(50), np.full((50, data.n_genes), 7.0))
    with torch.no_grad():
        h1, _ = mod.encode(make_batch(data, np.arange(50), masked=masked))
        h2, _ = mod.encode(make_batch(data2, np.arange(50), masked=masked))
    torch.testing.assert_close(h1, h2)


def test_without_covariates_has_no_film(tissue):
    data = _data(tissue)
    mod = SquintModule(data.n_genes, 3, 8, ModelConfig(hidden=16, latent=8, codebook_size=4, heads=1,
                                                       use_covariates=False))
    assert mod.enc_film is None and mod.decoder.films is None
    b = make_batch(data, np.arange(20))
    # changing covariates changes nothing
    with torch.no_grad():
        h1, _ = mod.encode(b)
        b.cond = b.cond + 5
        h2, _ = mod.encode(b)
    torch.testing.assert_close(h1, h2)


def test_batch_edges_point_to_seeds(tissue):
    data = _data(tissue)
    seeds = np.arange(10, 60)
    b = make_batch(data, seeds, rng=np.random.default_rng(0))
    assert int(b.edge_index[1].max()) < seeds.size
    nodes_global = np.unique(np.concatenate([seeds, data.nbr[seeds][data.nbr[seeds] >= 0]]))
    assert b.x_in.shape[0] == nodes_global.size
    # positive pairs are true graph edges
    for i, j in b.pos_edges.T.tolist():
        assert seeds[j] in data.nbr[seeds[i]]


def test_code_head_shapes_and_switch(tissue):
    data = _data(tissue)
    cfg = ModelConfig(hidden=32, latent=16, codebook_size=8, heads=2)
    mod = SquintModule(data.n_genes, len(data.sections), 8, cfg).eval()
    assert mod.code_logits(torch.randn(5, 16)).shape == (5, 2, 8)
    masked = np.zeros(data.n_cells, bool)
    masked[:40] = True
    out = mod(make_batch(data, np.arange(100), masked=masked))
    assert "code_ce" not in out  # the head is fitted after training, not by the training loss
    off = SquintModule(data.n_genes, len(data.sections), 8,
                       ModelConfig(hidden=32, latent=16, codebook_size=8, heads=2, code_head=False))
    assert off.code_head is None and off.token_codes.shape == (0, 2)


def test_code_logits_with_the_neighbours_codes():
    import torch

    from napari_squint.config import ModelConfig
    from napari_squint.models.squint import SquintModule

    cfg = ModelConfig(hidden=16, latent=8, codebook_size=4, heads=2, code_head_context=True)
    m = SquintModule(n_genes=5, n_batches=1, n_cond=3, cfg=cfg)
    assert m.code_head[0].in_features == 8 + 2 * 4
    h = torch.randn(6, 8)
    ctx = torch.rand(6, 8)
    assert m.code_logits(h, ctx).shape == (6, 2, 4)
    torch.testing.assert_close(m.code_logits(h), m.code_logits(h, torch.zeros(6, 8)))  # none: zeros
    plain = SquintModule(n_genes=5, n_batches=1, n_cond=3, cfg=ModelConfig(hidden=16, latent=8, codebook_size=4,
                                                                             heads=2))
    assert plain.code_head[0].in_features == 8
    torch.testing.assert_close(plain.code_logits(h, ctx), plain.code_logits(h))  # a plain head ignores it
