"""Embeddings of microenvironments and cells: linear probes and k-NN cross-sample profiles.

Section 4 of the CIFM paper: microenvironment embeddings come straight from
the encoder on the radius graph, cell embeddings from the encoder with every
edge removed (:meth:`napari_squint.api.cifm.Cifm.embed` writes both to
``obsm``). Two analyses work on any ``obsm`` embedding (CIFM's, SQuINT's
latent, a PCA...):

* :func:`linear_probe` -- cross-validated ROC-AUC of a logistic regression
  predicting a sample- or region-level label from the embedding (Figure 3B).
  Folds can be grouped (e.g. by section) so that the probe is scored on
  sections it never saw, which is what makes a sample-level label meaningful.
* :func:`knn_cross_sample_fraction` -- for every cell, the percentage of its
  ``k`` nearest neighbours in embedding space that come from each sample,
  averaged per sample (Figure 3C): a ``(samples x samples)`` matrix whose rows
  sum to 100.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_squint import _constants as K

__all__ = ["embedding_matrix", "knn_cross_sample_fraction", "linear_probe", "probe_table"]


def embedding_matrix(adata: AnnData, key: str) -> np.ndarray:
    """``obsm[key]`` as a dense float64 array, or ``X`` log-normalised when ``key == 'X'``."""
    if key == "X":
        from napari_squint.metrics import log_normalise

        return log_normalise(adata.X)
    if key not in adata.obsm:
        raise KeyError(f"embedding {key!r} not in adata.obsm (keys: {list(adata.obsm.keys())})")
    e = np.asarray(adata.obsm[key], dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"obsm[{key!r}] must be 2-D, got shape {e.shape}")
    return e


def linear_probe(
    adata: AnnData,
    *,
    obsm_key: str = K.CIFM_EMB_KEY,
    label_key: str,
    groups_key: str | None = None,
    n_splits: int = 5,
    seed: int = 0,
    max_cells: int | None = 10000,
    C: float = 1.0,
    max_iter: int = 300,
    record: bool = True,
) -> dict:
    """Cross-validated ROC-AUC of a linear classifier on an embedding.

    A standardised logistic regression (scikit-learn, ``class_weight="balanced"``)
    is fitted on the training folds and predicts class probabilities for the
    held-out fold; the out-of-fold probabilities of all cells are pooled and
    scored with one ROC-AUC (binary labels) or the macro one-vs-rest ROC-AUC
    (several classes). Balanced class weights matter with grouped folds: the
    class mix changes from fold to fold (e.g. 2 of 9 sections from one
    animal), and an unweighted model's intercept would follow each training
    fold's prior, which makes pooled scores of an uninformative embedding
    fall far below 0.5.

    Parameters
    ----------
    adata
        Cells with ``obsm[obsm_key]`` (``'X'`` uses log-normalised expression)
        and ``obs[label_key]``; unlabelled cells (NaN) are skipped.
    obsm_key
        Embedding to probe.
    label_key
        obs column with the label (sample-level such as ``animal_id``, or
        region-level such as ``region``).
    groups_key
        Optional obs column (e.g. ``section``): folds never split a group
        (scikit-learn ``StratifiedGroupKFold``), so the probe is scored on
        unseen groups. Cells whose class is missing from their fold's
        training groups cannot be scored fairly and are left out
        (``n_unscored``).
    n_splits
        Folds (at most the number of groups).
    seed
        Seed of the subsample and of the (stratified) folds.
    max_cells
        Probe at most this many labelled cells (seeded subsample; None: all).
    C, max_iter
        Inverse regularisation and iteration cap of the logistic regression.
    record
        Record the parameters and the result in
        ``adata.uns['squint']['linear_probe'][obsm_key + ':' + label_key]``
        (nothing else is written).

    Returns
    -------
    dict
        ``roc_auc``, ``accuracy``, ``n_cells`` (scored), ``n_unscored``,
        ``classes``, ``n_splits``, ``grouped``. ROC-AUC is NaN when a class
        has no scored cell.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if label_key not in adata.obs:
        raise KeyError(f"label key {label_key!r} not in adata.obs")
    emb = embedding_matrix(adata, obsm_key)
    lab = adata.obs[label_key]
    ok = lab.notna().to_numpy()
    idx = np.flatnonzero(ok)
    rng = np.random.default_rng(seed)
    if max_cells is not None and idx.size > max_cells:
        idx = np.sort(rng.choice(idx, size=int(max_cells), replace=False))
    y = lab.astype(str).to_numpy()[idx]
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"obs[{label_key!r}] has fewer than two classes among labelled cells")
    x = emb[idx]
    if groups_key is not None:
        if groups_key not in adata.obs:
            raise KeyError(f"groups key {groups_key!r} not in adata.obs")
        groups = adata.obs[groups_key].astype(str).to_numpy()[idx]
        n_groups = np.unique(groups).size
        if n_groups < 2:
            raise ValueError(f"obs[{groups_key!r}] has fewer than two groups among labelled cells")
        n_used = min(n_splits, n_groups)
        splitter = StratifiedGroupKFold(n_splits=n_used, shuffle=True, random_state=seed)
        splits = splitter.split(x, y, groups)
    else:
        n_used = n_splits
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        splits = splitter.split(x, y)
    proba = np.zeros((idx.size, classes.size))
    scored = np.ones(idx.size, dtype=bool)
    for tr, te in splits:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, tol=1e-3,
                                                                 class_weight="balanced"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x[tr], y[tr])
        cols = np.searchsorted(classes, clf.classes_)
        proba[np.ix_(te, cols)] = clf.predict_proba(x[te])
        # a class absent from the training folds cannot be predicted: leave its cells out
        scored[te[~np.isin(y[te], clf.classes_)]] = False
    if not scored.any():
        raise ValueError(f"no fold of obs[{groups_key!r}] trains on every class of obs[{label_key!r}]")
    ys, ps = y[scored], proba[scored]
    if classes.size == 2:
        auc = roc_auc_score(ys == classes[1], ps[:, 1]) if np.unique(ys).size == 2 else float("nan")
    else:
        auc = roc_auc_score(ys, ps, multi_class="ovr", average="macro", labels=classes) \
            if np.unique(ys).size == classes.size else float("nan")
    acc = accuracy_score(ys, classes[ps.argmax(1)])
    result = {"roc_auc": float(auc), "accuracy": float(acc), "n_cells": int(scored.sum()),
              "n_unscored": int((~scored).sum()),
              "classes": classes.tolist(), "n_splits": int(n_used), "grouped": groups_key is not None}
    if record:
        adata.uns.setdefault(K.UNS_KEY, {}).setdefault("linear_probe", {})[f"{obsm_key}:{label_key}"] = {
            "params": {"obsm_key": obsm_key, "label_key": label_key, "groups_key": groups_key,
                       "n_splits": n_splits, "seed": seed, "max_cells": max_cells, "C": C,
                       "max_iter": max_iter},
            "roc_auc": result["roc_auc"], "accuracy": result["accuracy"]}
    return result


def probe_table(adata: AnnData, *, obsm_keys: Sequence[str], label_keys: Sequence[str],
                groups_key: str | None = None, **kwargs) -> pd.DataFrame:
    """ROC-AUC of :func:`linear_probe` for every embedding (rows) and label (columns)."""
    rows = {}
    for key in obsm_keys:
        rows[key] = {lab: linear_probe(adata, obsm_key=key, label_key=lab, groups_key=groups_key,
                                       record=False, **kwargs)["roc_auc"] for lab in label_keys}
    return pd.DataFrame(rows).T


def knn_cross_sample_fraction(
    adata: AnnData,
    *,
    obsm_key: str = K.CIFM_EMB_KEY,
    sample_key: str = K.SECTION_KEY,
    k: int = 100,
    max_queries: int | None = 5000,
    seed: int = 0,
) -> pd.DataFrame:
    """k-NN cross-sample fraction profile of Figure 3C.

    For each query cell, the ``k`` nearest other cells in embedding space
    (Euclidean, among *all* cells) are found and the percentage coming from
    each sample is computed; these vectors are averaged over the query cells
    of each sample.

    Parameters
    ----------
    adata
        Cells with ``obsm[obsm_key]`` and ``obs[sample_key]``.
    obsm_key
        Embedding (``'X'``: log-normalised expression).
    sample_key
        obs column of the sample (or section) labels.
    k
        Neighbours per query (the paper uses 100).
    max_queries
        Query at most this many cells per sample (seeded; None: all). The
        reference set is always every cell.
    seed
        Seed of the query subsample.

    Returns
    -------
    pandas.DataFrame
        ``(samples, samples)`` in category order (sorted for non-categorical
        labels): row ``s`` is the mean percentage of
        neighbours of sample-``s`` cells found in each sample; rows sum to 100.
        Written to ``adata.uns['squint']['knn_cross_sample'][obsm_key]`` too.
    """
    from sklearn.neighbors import NearestNeighbors

    if sample_key not in adata.obs:
        raise KeyError(f"sample key {sample_key!r} not in adata.obs")
    emb = embedding_matrix(adata, obsm_key)
    samples = adata.obs[sample_key].astype(str)
    col = adata.obs[sample_key]
    if isinstance(col.dtype, pd.CategoricalDtype):  # category order; unused categories dropped
        names = [str(c) for c in col.cat.categories if (samples == str(c)).any()]
    else:
        names = sorted(pd.unique(samples))
    code = pd.Categorical(samples, categories=names).codes
    n = emb.shape[0]
    k = int(k)
    if not 1 <= k < n:
        raise ValueError(f"k must lie in [1, {n - 1}], got {k}")
    rng = np.random.default_rng(seed)
    queries = []
    for s in range(len(names)):
        idx = np.flatnonzero(code == s)
        if max_queries is not None and idx.size > max_queries:
            idx = np.sort(rng.choice(idx, size=int(max_queries), replace=False))
        queries.append(idx)
    q = np.concatenate(queries)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(emb)
    _, ind = nn.kneighbors(emb[q])
    # drop the query itself (first hit unless duplicates tie)
    not_self = ind != q[:, None]
    keep = np.cumsum(not_self, axis=1) <= k
    ind_k = np.where(not_self & keep, ind, -1)
    frac = np.zeros((q.size, len(names)))
    for s in range(len(names)):
        frac[:, s] = ((ind_k >= 0) & (code[np.maximum(ind_k, 0)] == s)).sum(1)
    frac = 100.0 * frac / k
    out = np.zeros((len(names), len(names)))
    start = 0
    for s, idx in enumerate(queries):
        out[s] = frac[start:start + idx.size].mean(0) if idx.size else np.nan
        start += idx.size
    df = pd.DataFrame(out, index=pd.Index(names, name=sample_key), columns=pd.Index(names, name="neighbour"))
    adata.uns.setdefault(K.UNS_KEY, {}).setdefault("knn_cross_sample", {})[obsm_key] = {
        "params": {"obsm_key": obsm_key, "sample_key": sample_key, "k": k, "max_queries": max_queries,
                   "seed": seed},
        "samples": names, "fraction": out.tolist()}
    return df
