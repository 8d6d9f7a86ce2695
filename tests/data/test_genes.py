import pytest

from napari_squint.data.genes import align_genes, select_genes
from napari_squint.data.validate import SlideError


def test_all_and_hvg(tissue):
    assert select_genes(tissue, "all") == tissue.var_names.tolist()
    hv = select_genes(tissue, 20)
    assert len(hv) == 20 and set(hv) <= set(tissue.var_names)
    # keeps slide order
    assert hv == [g for g in tissue.var_names if g in hv]
    # marker genes vary a lot: most HVGs should be informative (markers/programmes)
    info = set(sum(tissue.uns["synthetic"]["marker_genes"].values(), []))
    assert len(set(hv) & info) >= 10


def test_explicit_list_errors(tissue):
    with pytest.raises(SlideError, match="not in adata.var_names"):
        select_genes(tissue, ["gene_0000", "nope"])
    with pytest.raises(SlideError, match="positive"):
        select_genes(tissue, 0)


def test_align_genes_fills_zeros(tissue):
    genes = ["gene_0001", "absent", "gene_0000"]
    out = align_genes(tissue, genes)
    assert out.var_names.tolist() == genes
    assert out.X[:, 1].nnz == 0
    assert (out.X[:, 2] != tissue[:, "gene_0000"].X).nnz == 0


def test_most_variable_gives_the_positions_select_genes_names(tissue):
    from napari_squint.data.genes import most_variable, select_genes

    idx = most_variable(tissue.X, 7, batch=tissue.obs["section"].to_numpy())
    names = select_genes(tissue, 7, batch_key="section")
    assert idx.tolist() == sorted(tissue.var_names.get_indexer(names).tolist()) and idx.size == 7
    assert most_variable(tissue.X, tissue.n_vars + 5).tolist() == list(range(tissue.n_vars))
