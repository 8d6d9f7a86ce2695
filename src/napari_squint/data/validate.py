"""Input checks for slides: every failure names the key or value at fault."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


class SlideError(ValueError):
    """A slide that cannot be used as given (bad counts, coordinates, sections...)."""


#: coordinate columns the engine reads (x, y and an optional z)
SPATIAL_DIMS_MAX = 3


def get_counts(adata: AnnData, layer: str | None):
    """Return the counts matrix: ``adata.layers[layer]`` or ``adata.X``."""
    if layer is None:
        if adata.X is None:
            raise SlideError("adata.X is empty; name the counts layer with `layer=`")
        return adata.X
    if layer not in adata.layers:
        raise SlideError(
            f"counts layer {layer!r} not found in adata.layers (available: {list(adata.layers)})"
        )
    return adata.layers[layer]


def check_sparse_structure(X, *, where: str) -> None:
    """A sparse matrix's arrays must agree before scipy touches them (a damaged file can crash scipy).

    Checks: ``indptr`` has ``n_rows + 1`` entries, starts at 0, never decreases and ends at ``nnz``;
    ``indices`` and ``data`` both hold ``nnz`` entries; every column (CSR) or row (CSC) index lies in
    ``[0, n)``. Dense arrays and lazy matrices pass through (their shape is checked where they are read).

    Raises
    ------
    SlideError
        Naming ``where`` and what is wrong.
    """
    if not (sp.issparse(X) and X.format in ("csr", "csc")):
        return
    indptr, indices, data = np.asarray(X.indptr), np.asarray(X.indices), np.asarray(X.data)
    n_major, n_minor = (X.shape if X.format == "csr" else X.shape[::-1])
    _check_compressed(indptr, indices.size, data.size, n_major, where=where, kind=X.format)
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n_minor):
        bad = int(indices.max()) if int(indices.max()) >= n_minor else int(indices.min())
        what = "column" if X.format == "csr" else "row"
        raise SlideError(f"{where} is a damaged sparse matrix: {what} index {bad} lies outside [0, {n_minor}) "
                         f"for shape {tuple(X.shape)}")


def _check_compressed(indptr, n_indices: int, n_data: int, n_major: int, *, where: str, kind: str) -> None:
    if indptr.ndim != 1 or indptr.size != n_major + 1:
        raise SlideError(f"{where} is a damaged sparse matrix: indptr has {indptr.size} entries, expected "
                         f"{n_major + 1} for {n_major} {'rows' if kind == 'csr' else 'columns'}")
    if not np.issubdtype(indptr.dtype, np.integer):
        raise SlideError(f"{where} is a damaged sparse matrix: indptr has dtype {indptr.dtype}")
    if indptr.size and (indptr[0] != 0 or np.any(np.diff(indptr) < 0)):
        raise SlideError(f"{where} is a damaged sparse matrix: indptr must start at 0 and never decrease")
    if n_indices != n_data or (indptr.size and int(indptr[-1]) != n_indices):
        raise SlideError(f"{where} is a damaged sparse matrix: {n_indices} indices, {n_data} values and "
                         f"indptr ending at {int(indptr[-1]) if indptr.size else 0} must agree")


def check_sparse_on_disk(group, shape, *, where: str, chunk: int = 10_000_000) -> None:
    """:func:`check_sparse_structure` for a CSR/CSC group of an ``.h5ad`` file (h5py), read in chunks."""
    kind = group.attrs.get("encoding-type", "")
    kind = "csr" if "csr" in str(kind) else "csc" if "csc" in str(kind) else None
    if kind is None or not all(k in group for k in ("indptr", "indices", "data")):
        return
    indptr = np.asarray(group["indptr"][:])
    n_major, n_minor = (shape if kind == "csr" else shape[::-1])
    _check_compressed(indptr, group["indices"].shape[0], group["data"].shape[0], n_major, where=where, kind=kind)
    idx = group["indices"]
    for start in range(0, idx.shape[0], chunk):
        block = np.asarray(idx[start:start + chunk])
        if block.size and (int(block.min()) < 0 or int(block.max()) >= n_minor):
            bad = int(block.max()) if int(block.max()) >= n_minor else int(block.min())
            what = "column" if kind == "csr" else "row"
            raise SlideError(f"{where} is a damaged sparse matrix: {what} index {bad} lies outside [0, {n_minor}) "
                             f"for shape {tuple(shape)}")


def check_counts(X, *, where: str, allow_non_counts: bool = False, sample: int = 200_000) -> None:
    """Counts must be finite, non-negative integers.

    Parameters
    ----------
    X
        Dense or sparse (n, g) matrix.
    where
        Name of the matrix (``"adata.X"`` or ``"adata.layers['counts']"``) for messages.
    allow_non_counts
        Accept non-integer values (normalised data) when the user asks for it.
    sample
        Check at most this many stored values (seeded, evenly spaced) for integrality.
    """
    check_sparse_structure(X, where=where)
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if data.size == 0:
        return
    if not np.issubdtype(data.dtype, np.number):
        raise SlideError(f"{where} has non-numeric dtype {data.dtype}")
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise SlideError(f"{where} contains NaN or infinite values")
    if data.min() < 0:
        raise SlideError(
            f"{where} contains negative values (min {data.min():.3g}); raw counts are required"
        )
    if allow_non_counts or np.issubdtype(data.dtype, np.integer):
        return
    step = max(1, data.size // sample)
    probe = data[::step]
    if not np.allclose(probe, np.round(probe), atol=1e-6):
        raise SlideError(
            f"{where} holds non-integer values (e.g. {probe[np.abs(probe - np.round(probe)) > 1e-6][:3]}); "
            "it looks normalised or log-transformed. Give the raw counts layer with `layer=`, "
            "or pass allow_non_counts=True (CLI: --allow-non-counts) to use it anyway."
        )


def check_not_all_zero(X, *, where: str) -> None:
    """Refuse a matrix whose every value is zero (nothing to learn; training would report a loss of 0)."""
    data = X.data if sp.issparse(X) else np.asarray(X)
    if data.size == 0 or not np.any(data):
        raise SlideError(f"{where}: every cell has zero counts; check that the counts are in X (or name the "
                         "counts layer with --layer / layer=)")


def check_coordinates(adata: AnnData, spatial_key: str) -> np.ndarray:
    """Return (n, 2) or (n, 3) float64 coordinates from ``adata.obsm[spatial_key]`` after checking them.

    Two columns are a plane (x, y); three are a volume (x, y, z), used as given: every column is read in the file's
    one coordinate unit, so distances, neighbours, tiles and held-out patches (balls) are Euclidean in 3D. A
    slide whose z is in another unit than x, y must be rescaled before (the unit is never guessed), and a
    3D slide is used as a plane by giving a two-column key. More than three columns: the first three are used.
    """
    if spatial_key not in adata.obsm:
        raise SlideError(
            f"coordinates key {spatial_key!r} not found in adata.obsm (available: {list(adata.obsm)})"
        )
    coords = adata.obsm[spatial_key]
    if isinstance(coords, pd.DataFrame):
        coords = coords.to_numpy()
    try:
        coords = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SlideError(f"adata.obsm[{spatial_key!r}] holds values that are not numbers ({err})") from None
    if coords.ndim != 2 or coords.shape[0] != adata.n_obs or coords.shape[1] < 2:
        raise SlideError(
            f"adata.obsm[{spatial_key!r}] has shape {coords.shape}; expected ({adata.n_obs}, 2) or ({adata.n_obs}, 3)"
        )
    if coords.shape[1] > 3:
        import warnings

        warnings.warn(f"adata.obsm[{spatial_key!r}] has {coords.shape[1]} columns: the first three are used as "
                      f"x, y, z and the other {coords.shape[1] - 3} are ignored", UserWarning, stacklevel=2)
    coords = coords[:, :SPATIAL_DIMS_MAX]
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        first = adata.obs_names[np.flatnonzero(bad)[:3]].tolist()
        raise SlideError(
            f"adata.obsm[{spatial_key!r}] has {int(bad.sum())} cells with NaN/inf coordinates, e.g. {first}"
        )
    return coords


def check_sections(adata: AnnData, section_key: str | None, *, min_cells: int) -> pd.Series:
    """Return the section label of each cell as a categorical Series.

    ``section_key=None`` treats the whole table as one section named ``"0"``.
    """
    if section_key is None:
        return pd.Series(pd.Categorical(["0"] * adata.n_obs), index=adata.obs_names)
    if section_key not in adata.obs:
        raise SlideError(
            f"section key {section_key!r} not found in adata.obs (available: {list(adata.obs.columns)})"
        )
    sec = adata.obs[section_key]
    if sec.isna().any():
        raise SlideError(f"adata.obs[{section_key!r}] has {int(sec.isna().sum())} missing values")
    sec = sec.astype(str).astype("category")
    counts = sec.value_counts()
    small = counts[counts < min_cells]
    if len(small):
        raise SlideError(
            f"sections in adata.obs[{section_key!r}] with fewer than {min_cells} cells (k+1): "
            f"{dict(small)}; drop them or lower k"
        )
    return sec


def validate_slide(
    adata: AnnData,
    *,
    section_key: str | None,
    spatial_key: str,
    layer: str | None,
    k: int,
    allow_non_counts: bool = False,
):
    """Check a slide and return ``(counts, coords, sections)``.

    Raises
    ------
    SlideError
        With a message naming the key at fault.
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise SlideError(f"empty slide: {adata.n_obs} cells x {adata.n_vars} genes")
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][:3].tolist()
        raise SlideError(f"duplicate cell ids in adata.obs_names, e.g. {dup}")
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()][:3].tolist()
        raise SlideError(f"duplicate gene names in adata.var_names, e.g. {dup}")
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    counts = get_counts(adata, layer)
    check_counts(counts, where=where, allow_non_counts=allow_non_counts)
    check_not_all_zero(counts, where=where)
    coords = check_coordinates(adata, spatial_key)
    sections = check_sections(adata, section_key, min_cells=k + 1)
    return counts, coords, sections


def section_rows(labels: np.ndarray, section, key: str | None) -> tuple[str, np.ndarray]:
    """Resolve ``section`` (``None``: the slide's only section) to its name and row indices.

    ``labels`` (n,) holds each cell's section name; ``key`` is the obs column
    they came from, named in the error when ``section`` is not among them.
    """
    if section is None:
        uniq = np.unique(labels)
        if uniq.size != 1:
            raise ValueError(f"pass section= (the slide has {uniq.size} sections)")
        section = uniq[0]
    rows = np.flatnonzero(labels == str(section))
    if rows.size == 0:
        raise ValueError(f"section {section!r} not found in obs[{key!r}]")
    return section, rows


def section_depth(library: np.ndarray, observed: np.ndarray, obs_names, section) -> float:
    """The read depth given to imputed cells of ``section``: the median library of its observed cells.

    Raises
    ------
    SlideError
        The median is not positive (most observed cells there have zero counts); the message names the
        section and some of the zero-count cells.
    """
    ref = np.asarray(library, dtype=np.float64)[observed]
    depth = float(np.median(ref)) if ref.size else 0.0
    if not depth > 0:
        zero = np.flatnonzero(observed)[ref <= 0][:3]
        names = [str(obs_names[i]) for i in zero]
        raise SlideError(f"section {section!r}: the median read depth of its {ref.size} observed cells is {depth:g} "
                         f"({int((ref <= 0).sum())} have zero counts, e.g. cells {names}); imputed cells there "
                         "cannot be given a library size")
    return depth
