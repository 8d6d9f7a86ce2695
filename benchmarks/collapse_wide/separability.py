"""Is the 1,000-gene, 200-count synthetic slide's cell type recoverable from the data? (issue 16)

usage: PYTHONPATH=src .venv/bin/python benchmarks/collapse_wide/separability.py [N_CELLS [N_GENES [MEAN_LIBRARY]]]

Measures, on make_tissue(N, 1000 genes, 4 sections, seed 0) (the `wide` case of train_speed.py, subsampled):
* scanpy's standard pipeline (normalize_total, log1p, PCA 50, 15 neighbours, Louvain from networkx) and k-means on the PCs:
  adjusted Rand index and NMI against the true cell types, on the cell X and on the microenvironment X_nbr;
* a logistic-regression probe (held-out accuracy) on the 50 PCs;
* the deviance of X_nbr explained (Poisson deviance, the reconstruction_report definition) by
  (a) the oracle: each microenvironment = Σ members' true-type mean proportions x member depth, rescaled to its depth,
  (b) the same with Louvain / k-means clusters instead of true types, (c) the oracle on the marker genes and on the rest.
"""
import json, sys, time
import numpy as np, scipy.sparse as sp, scanpy as sc, anndata as ad
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score as ari, normalized_mutual_info_score as nmi
from napari_squint.data.synthetic import make_tissue
from napari_squint.data.prepare import GraphConfig, prepare_slide

n_cells = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
n_genes = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
lib = float(sys.argv[3]) if len(sys.argv) > 3 else 200.0
t0 = time.time()
a = make_tissue(n_cells=n_cells, n_genes=n_genes, n_sections=4, seed=0, mean_library=lib)
truth = a.obs["cell_type"].astype(str).to_numpy()
n_types = np.unique(truth).size
d = prepare_slide(a, a.var_names.tolist(), section_key="section", spatial_key="spatial", graph=GraphConfig())
out = {"n_cells": n_cells, "n_genes": n_genes, "mean_library": lib, "n_types": int(n_types),
       "median_counts_X": float(np.median(d.library())), "median_counts_X_nbr": float(np.median(np.asarray(d.x_nbr.sum(1)).ravel()))}
syn = a.uns.get("synthetic", {})

def pipeline(counts, name):
    b = ad.AnnData(X=sp.csr_matrix(counts, dtype=np.float32))
    sc.pp.normalize_total(b, target_sum=1e4); sc.pp.log1p(b)
    sc.pp.pca(b, n_comps=50, random_state=0)
    # scanpy's neighbours + community detection, done by hand (scanpy's neighbours call getnnz, gone from scipy 1.17
    # sparse arrays; igraph / leidenalg are not installed): 15 nearest cells on the 50 PCs, symmetrised, Louvain
    # (modularity, networkx), the method Leiden refines
    import networkx as nx
    from sklearn.neighbors import kneighbors_graph
    knn = sp.csr_matrix(kneighbors_graph(b.obsm["X_pca"], 15, include_self=False))
    knn = ((knn + knn.T) > 0).tocoo()
    keep = knn.row < knn.col
    g = nx.Graph(); g.add_nodes_from(range(knn.shape[0])); g.add_edges_from(zip(knn.row[keep], knn.col[keep]))
    res = {}
    for r in (0.5, 1.0):
        comms = nx.community.louvain_communities(g, resolution=r, seed=0)
        lab = np.empty(knn.shape[0], dtype=object)
        for ci, c in enumerate(comms):
            lab[list(c)] = str(ci)
        lab = lab.astype(str)
        res[f"louvain_r{r}"] = {"ari": ari(truth, lab), "nmi": nmi(truth, lab), "n_clusters": int(np.unique(lab).size)}
        res[f"_louvain_r{r}"] = lab
    km = KMeans(n_clusters=n_types, n_init=4, random_state=0).fit_predict(b.obsm["X_pca"])
    res["kmeans"] = {"ari": ari(truth, km), "nmi": nmi(truth, km)}
    res["_kmeans"] = km.astype(str)
    pcs = b.obsm["X_pca"]; half = pcs.shape[0] // 2
    perm = np.random.default_rng(0).permutation(pcs.shape[0])
    lr = LogisticRegression(max_iter=2000).fit(pcs[perm[:half]], truth[perm[:half]])
    res["probe_acc_pca50"] = float((lr.predict(pcs[perm[half:]]) == truth[perm[half:]]).mean())
    res["pc_var_ratio_top5"] = b.uns["pca"]["variance_ratio"][:5].tolist()
    return res

def deviance(x, mu):
    x = np.asarray(x, dtype=np.float64); mu = np.maximum(np.asarray(mu, dtype=np.float64), 1e-12)
    t = np.where(x > 0, x * np.log(np.where(x > 0, x, 1) / mu), 0.0) - (x - mu)
    return 2 * t.sum()

def explained_by(labels, genes=None):
    """Deviance of X_nbr explained when each member cell is given its label's mean proportions."""
    counts = d.counts; libc = d.library()
    labs, inv = np.unique(labels, return_inverse=True)
    onehot = sp.csr_matrix((np.ones(len(inv)), (inv, np.arange(len(inv)))), shape=(len(labs), len(inv)))
    prof = np.asarray((onehot @ counts).todense()); prof /= prof.sum(1, keepdims=True)
    cell_mu = prof[inv] * libc[:, None]                          # (n, g) each cell's expected counts
    nb = d.nbr; rows = np.repeat(np.arange(nb.shape[0]), nb.shape[1]); ok = nb.ravel() >= 0
    A = sp.csr_matrix((np.ones(ok.sum()), (rows[ok], nb.ravel()[ok])), shape=(nb.shape[0],) * 2) + sp.identity(nb.shape[0])
    mu = A @ cell_mu
    x = d.x_nbr.toarray(); libn = x.sum(1, keepdims=True)
    mu *= libn / mu.sum(1, keepdims=True)
    mu0 = (x.sum(0) / x.sum())[None, :] * libn
    g = slice(None) if genes is None else genes
    return 1 - deviance(x[:, g], mu[:, g]) / deviance(x[:, g], mu0[:, g])

cell = pipeline(d.counts, "X")
nbr = pipeline(d.x_nbr, "X_nbr")
out["X"] = {k: v for k, v in cell.items() if not k.startswith("_")}
out["X_nbr"] = {k: v for k, v in nbr.items() if not k.startswith("_")}
mk = np.unique(np.concatenate([np.asarray(v) for v in syn["marker_genes"].values()]))
markers = np.flatnonzero(np.isin(a.var_names.to_numpy(), mk))
rest = np.setdiff1d(np.arange(a.n_vars), markers)
out["n_marker_genes"] = int(markers.size)
out["deviance_explained_X_nbr"] = {
    "oracle (true types)": explained_by(truth),
    "louvain r1 on X": explained_by(cell["_louvain_r1.0"]),
    "kmeans on X": explained_by(cell["_kmeans"]),
    "one label (mean profile)": explained_by(np.zeros(len(truth), int)),
    "oracle, marker genes only": explained_by(truth, markers),
    "oracle, the other genes": explained_by(truth, rest),
}
out["seconds"] = time.time() - t0
print(json.dumps(out, indent=1, default=float))
