"""Deterministic synthetic spatial transcriptomics tissue.

:func:`make_tissue` builds an AnnData with known ground truth: several tissue
sections of uniformly spaced cells, layered domains, immune aggregates, cell
types whose mix depends on the domain, negative-binomial counts whose mean
depends on the cell type *and* on the neighbourhood, and (optionally) a planted
condition-specific niche.  It is the package's demo data and the test fixture.

:func:`tile_sections` replicates the sections of any AnnData to scale a real
slide up for benchmarks.

Generative model
----------------
For cell ``c`` of type ``t`` with library size ``L_c`` the expected count of
gene ``g`` is ``mu_cg = L_c * w_cg / sum_h w_ch`` with log-weights

``log w_cg = base_tg + beta * f_c * [g in neighbour programme]``

where ``base_tg`` holds a shared background plus type-specific marker genes and
``f_c`` is the fraction of ``T_cell`` among the ``k`` nearest neighbours of
``c``.  ``Tumour`` cells inside the planted niche switch on an activation
programme whose genes are silent everywhere else.  Counts are negative
binomial, i.e. gamma-Poisson: ``x_cg ~ Poisson(mu_cg * G_cg)``,
``G_cg ~ Gamma(theta_g, 1 / theta_g)`` (small means are drawn from the same
distribution by CDF inversion, which is faster; see ``_negative_binomial``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial import cKDTree

from napari_squint._constants import CELL_TYPE_KEY, SECTION_KEY, SPATIAL_KEY

__all__ = ["CELL_TYPE_NAMES", "make_tissue", "tile_sections"]

#: obs columns written by :func:`make_tissue` besides the shared keys.
DOMAIN_KEY = "domain"
CONDITION_KEY = "condition"
SAMPLE_KEY = "sample"
NICHE_KEY = "niche"
PLANTED_NICHE_KEY = "planted_niche"
NEIGHBOUR_FRACTION_KEY = "neighbour_fraction"
UNS_SYNTHETIC_KEY = "synthetic"

#: Cell-type names, used in this order; types beyond the list are ``Type_<i>``.
CELL_TYPE_NAMES: tuple[str, ...] = (
    "Tumour",
    "T_cell",
    "Macrophage",
    "Fibroblast",
    "Endothelial",
    "B_cell",
    "Neuron_A",
    "Neuron_B",
    "Astrocyte",
    "Oligodendrocyte",
    "Epithelial",
    "Pericyte",
    "NK_cell",
    "Dendritic_cell",
    "Plasma_cell",
    "Smooth_muscle",
    "Microglia",
    "Keratinocyte",
)

_NICHE_TYPE = "Tumour"  # enriched in, and activated inside, the planted niche
_NEIGHBOUR_TYPE = "T_cell"  # its neighbourhood fraction drives a gene programme
_IMMUNE_MIX = {"T_cell": 0.6, "B_cell": 0.25, "Macrophage": 0.15}

_SPACING = 12.8  # hexagonal grid step; gives a median nearest-neighbour distance ~10
_JITTER = 0.25  # jitter radius as a fraction of the step (< 0.5: no duplicates)
_SECTION_GAP = 20.0  # gap between sections, in grid steps
_NEIGHBOUR_K = 10
_NEIGHBOUR_BETA = 3.0  # log fold change of the neighbour programme at f = 1
_LIBRARY_SIGMA = 0.35  # log-scale spread of the library size
_CHUNK_ENTRIES = 1 << 22  # cells x genes per expression chunk (16 MB float32)
_MU_SWITCH = 5.0  # means above this are drawn gamma-Poisson, below by CDF inversion


def make_tissue(
    *,
    n_cells: int = 6000,
    n_genes: int = 200,
    n_sections: int = 3,
    n_cell_types: int = 12,
    n_domains: int = 4,
    seed: int = 0,
    conditions: tuple[str, ...] = ("control", "case"),
    planted_niche: bool = True,
    mean_library: float = 200.0,
    spatial_scale: float = 1.0,
    dtype=np.int32,
) -> anndata.AnnData:
    """Generate a synthetic multi-section tissue with known ground truth.

    Parameters
    ----------
    n_cells
        Total number of cells, split as evenly as possible over the sections;
        at least ``20 * n_sections``.
    n_genes
        Number of genes; at least ``2 * n_cell_types + 6``.
    n_sections
        Number of tissue sections. Each is a roughly round patch of cells on a
        jittered hexagonal grid; sections are laid side by side along x.
    n_cell_types
        Number of cell types, at least 2. Names come from
        :data:`CELL_TYPE_NAMES` (``Tumour`` and ``T_cell`` always included).
    n_domains
        Number of layered domains (wavy bands across y in every section).
    seed
        Seed of the whole generator; equal seeds give identical outputs.
    conditions
        Condition names, assigned to the sections round-robin (with fewer
        sections than conditions the last conditions get no section).
    planted_niche
        Whether sections of the last condition get a planted niche: a disc where
        ``Tumour`` is enriched and its cells express an activation programme
        (``uns['synthetic']['niche_genes']``) that is silent everywhere else.
    mean_library
        Mean total count per cell; per-cell library sizes are lognormal.
    spatial_scale
        Factor applied to every coordinate. At 1 the median nearest-neighbour
        distance is about 10 (micrometre-like units). Nothing else depends on it.
    dtype
        Numeric dtype of the integer counts in ``X``.

    Returns
    -------
    anndata.AnnData
        ``X``: CSR ``(n_cells, n_genes)`` integer counts of ``dtype``; every
        cell has at least one count. ``obs``: ``section``, ``sample``,
        ``condition``, ``domain``, ``cell_type`` (categoricals), ``niche``
        (``none`` / ``immune_aggregate`` / ``planted``), ``planted_niche``
        (bool) and ``neighbour_fraction`` (ground-truth fraction of ``T_cell``
        among the 10 nearest neighbours). ``obsm['spatial']``: float32
        ``(n_cells, 2)``. ``uns['synthetic']``: seed, parameters and the
        gene programmes (``marker_genes``, ``neighbour_programme_genes``,
        ``niche_genes``).

    Raises
    ------
    ValueError
        If a parameter is out of range; the message names it.

    Examples
    --------
    >>> adata = make_tissue(n_cells=2000, n_genes=100, seed=1)
    >>> adata.X.shape
    (2000, 100)
    """
    conditions = tuple(conditions)
    dtype = _check_params(
        n_cells=n_cells,
        n_genes=n_genes,
        n_sections=n_sections,
        n_cell_types=n_cell_types,
        n_domains=n_domains,
        seed=seed,
        conditions=conditions,
        mean_library=mean_library,
        spatial_scale=spatial_scale,
        dtype=dtype,
    )
    seeds = np.random.SeedSequence(int(seed)).spawn(5)  # layout, types, genes, library, counts
    rng_layout, rng_types, rng_programme, rng_library = map(np.random.default_rng, seeds[:4])
    type_names = _cell_type_names(n_cell_types)

    # --- layout: sections, domains, niches ---------------------------------
    sizes = np.full(n_sections, n_cells // n_sections)
    sizes[: n_cells % n_sections] += 1
    section_condition = [conditions[s % len(conditions)] for s in range(n_sections)]
    xy_parts, domain_parts, niche_parts = [], [], []
    x_offset = 0.0
    for s, n_s in enumerate(sizes):
        xy = _section_coords(rng_layout, int(n_s))
        xy[:, 0] += x_offset - xy[:, 0].min()
        x_offset = xy[:, 0].max() + _SECTION_GAP * _SPACING
        plant = planted_niche and section_condition[s] == conditions[-1]
        xy_parts.append(xy)
        domain_parts.append(_domains(rng_layout, xy, n_domains))
        niche_parts.append(_niches(rng_layout, xy, plant=plant))
    xy = np.concatenate(xy_parts)
    domain = np.concatenate(domain_parts)
    niche = np.concatenate(niche_parts)  # 0 none, 1 immune aggregate, 2 planted
    section = np.repeat(np.arange(n_sections), sizes)

    # --- cell types and neighbourhoods --------------------------------------
    cell_type = _sample_types(rng_types, domain, niche, n_domains, type_names)
    nbr_frac = np.empty(n_cells, dtype=np.float64)
    nbr_code = type_names.index(_NEIGHBOUR_TYPE)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    for s in range(n_sections):
        lo, hi = bounds[s], bounds[s + 1]
        nbr_frac[lo:hi] = _neighbour_fraction(xy[lo:hi], cell_type[lo:hi] == nbr_code)
    activated = (niche == 2) & (cell_type == type_names.index(_NICHE_TYPE))

    # --- expression -----------------------------------------------------------
    prog = _programme(rng_programme, n_genes, n_cell_types)
    log_lib = rng_library.normal(-0.5 * _LIBRARY_SIGMA**2, _LIBRARY_SIGMA, size=n_cells)
    library = mean_library * np.exp(log_lib)
    X = _sample_counts(prog, cell_type, nbr_frac, activated, library, seeds[4], dtype)

    # --- assemble ---------------------------------------------------------------
    width = max(6, len(str(n_cells - 1)))
    gene_width = max(4, len(str(n_genes - 1)))
    section_names = [f"section_{s}" for s in range(n_sections)]
    sample_names = [f"sample_{s}" for s in range(n_sections)]
    domain_names = [f"domain_{d}" for d in range(n_domains)]
    obs = pd.DataFrame(
        {
            SECTION_KEY: pd.Categorical.from_codes(section, section_names),
            SAMPLE_KEY: pd.Categorical.from_codes(section, sample_names),
            CONDITION_KEY: pd.Categorical(
                np.asarray(section_condition, dtype=object)[section], categories=list(conditions)
            ),
            DOMAIN_KEY: pd.Categorical.from_codes(domain, domain_names),
            CELL_TYPE_KEY: pd.Categorical.from_codes(cell_type, type_names),
            NICHE_KEY: pd.Categorical.from_codes(niche, ["none", "immune_aggregate", "planted"]),
            PLANTED_NICHE_KEY: niche == 2,
            NEIGHBOUR_FRACTION_KEY: nbr_frac.astype(np.float32),
        },
        index=pd.Index([f"cell_{i:0{width}d}" for i in range(n_cells)]),
    )
    var = pd.DataFrame(index=pd.Index([f"gene_{g:0{gene_width}d}" for g in range(n_genes)]))
    genes = var.index.to_numpy()
    uns = {
        UNS_SYNTHETIC_KEY: {
            "seed": int(seed),
            "params": {
                "n_cells": int(n_cells),
                "n_genes": int(n_genes),
                "n_sections": int(n_sections),
                "n_cell_types": int(n_cell_types),
                "n_domains": int(n_domains),
                "seed": int(seed),
                "conditions": list(conditions),
                "planted_niche": bool(planted_niche),
                "mean_library": float(mean_library),
                "spatial_scale": float(spatial_scale),
                "dtype": np.dtype(dtype).name,
            },
            "cell_types": list(type_names),
            "marker_genes": {t: genes[m].tolist() for t, m in zip(type_names, prog.markers)},
            "neighbour_programme_genes": genes[prog.nbr_genes].tolist(),
            "neighbour_type": _NEIGHBOUR_TYPE,
            "neighbour_k": _NEIGHBOUR_K,
            "niche_genes": genes[prog.niche_genes].tolist(),
            "niche_cell_type": _NICHE_TYPE,
            "niche_condition": conditions[-1],
        }
    }
    coords = (xy * float(spatial_scale)).astype(np.float32)
    return anndata.AnnData(X=X, obs=obs, var=var, obsm={SPATIAL_KEY: coords}, uns=uns)


def tile_sections(
    adata: anndata.AnnData,
    n_copies: int,
    *,
    gap: float | None = None,
    section_key: str = SECTION_KEY,
    spatial_key: str = SPATIAL_KEY,
) -> anndata.AnnData:
    """Replicate every section of ``adata`` ``n_copies`` times as new sections.

    Copy ``i`` renames each section ``s`` to ``f"{s}_tile{i}"`` and each cell
    ``c`` to ``f"{c}_tile{i}"``, and is shifted along x by ``i * (extent + gap)``
    where ``extent`` is the x extent of ``adata``, so no two copies overlap.

    Parameters
    ----------
    adata
        Input data, real or synthetic; not modified.
    n_copies
        Number of copies, at least 1.
    gap
        Space between copies along x, in coordinate units; ``None`` uses 5% of
        the x extent.
    section_key
        obs column naming the sections; when absent, the whole slide is one
        section named ``"section"``.
    spatial_key
        obsm key of the ``(n, 2+)`` coordinates; when absent nothing is shifted.

    Returns
    -------
    anndata.AnnData
        ``n_copies * n_obs`` cells. ``X`` and layers stay sparse (CSR) when
        they are sparse, other obsm entries and obs columns are repeated,
        ``var``, ``varm`` and ``uns`` are kept, ``obsp`` is dropped.

    Raises
    ------
    ValueError
        If ``n_copies`` < 1 or ``gap`` is negative.
    """
    if not _is_int_at_least(n_copies, 1):
        raise ValueError(f"n_copies must be an integer >= 1, got {n_copies!r}")
    if gap is not None and not (np.isfinite(gap) and gap >= 0):
        raise ValueError(f"gap must be a finite number >= 0 or None, got {gap!r}")
    n_copies = int(n_copies)
    obs = adata.obs.copy()
    if section_key in obs:
        sections = obs[section_key].astype(str).to_numpy()
    else:
        sections = np.full(adata.n_obs, "section", dtype=object)

    obs_parts = []
    for i in range(n_copies):
        part = obs.copy()
        part.index = obs.index.astype(str) + f"_tile{i}"
        part[section_key] = pd.array(np.char.add(sections.astype(str), f"_tile{i}"), dtype=object)
        obs_parts.append(part)
    new_obs = pd.concat(obs_parts)
    new_obs[section_key] = pd.Categorical(
        new_obs[section_key].to_numpy(),
        categories=pd.unique(new_obs[section_key].to_numpy()),
    )

    obsm = {key: _tile_rows(value, n_copies) for key, value in adata.obsm.items()}
    for key, value in obsm.items():
        if isinstance(value, pd.DataFrame):  # obsm data frames must carry the new obs names
            value.index = new_obs.index
    if spatial_key in adata.obsm and adata.n_obs:
        base = np.asarray(adata.obsm[spatial_key])
        extent = float(base[:, 0].max() - base[:, 0].min())
        step = extent + (0.05 * extent if gap is None else float(gap))
        shift = np.repeat(np.arange(n_copies, dtype=np.float64) * step, adata.n_obs)
        coords = obsm[spatial_key]
        coords[:, 0] = (coords[:, 0] + shift).astype(coords.dtype)
    layers = {key: _tile_rows(value, n_copies) for key, value in adata.layers.items()}
    X = None if adata.X is None else _tile_rows(adata.X, n_copies)
    return anndata.AnnData(
        X=X,
        obs=new_obs,
        var=adata.var.copy(),
        obsm=obsm,
        varm=dict(adata.varm),
        layers=layers,
        uns=copy.deepcopy(dict(adata.uns)),
    )


# --- parameter checks ------------------------------------------------------------


def _check_params(
    *,
    n_cells,
    n_genes,
    n_sections,
    n_cell_types,
    n_domains,
    seed,
    conditions,
    mean_library,
    spatial_scale,
    dtype,
) -> np.dtype:
    """Raise ``ValueError`` naming the first bad parameter; return the dtype."""
    for name, value, low in (
        ("n_sections", n_sections, 1),
        ("n_cell_types", n_cell_types, 2),
        ("n_domains", n_domains, 1),
        ("seed", seed, 0),
    ):
        if not _is_int_at_least(value, low):
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    min_cells = 20 * n_sections
    if not _is_int_at_least(n_cells, min_cells):
        raise ValueError(
            f"n_cells must be an integer >= 20 * n_sections = {min_cells}, got {n_cells!r}"
        )
    min_genes = 2 * n_cell_types + 6
    if not _is_int_at_least(n_genes, min_genes):
        raise ValueError(
            f"n_genes must be an integer >= 2 * n_cell_types + 6 = {min_genes}, got {n_genes!r}"
        )
    if not conditions or not all(isinstance(c, str) and c for c in conditions):
        raise ValueError(
            f"conditions must be a non-empty tuple of non-empty strings, got {conditions!r}"
        )
    if len(set(conditions)) != len(conditions):
        raise ValueError(f"conditions must be unique, got {conditions!r}")
    for name, value in (("mean_library", mean_library), ("spatial_scale", spatial_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"dtype must be a numeric numpy dtype, got {dtype!r}") from err
    if dt.kind not in "iuf":
        raise ValueError(f"dtype must be an integer or float numpy dtype, got {dtype!r}")
    return dt


def _is_int_at_least(value, low: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low


def _cell_type_names(n: int) -> list[str]:
    names = list(CELL_TYPE_NAMES[:n])
    names += [f"Type_{i}" for i in range(len(names), n)]
    return names


# --- layout ------------------------------------------------------------------------


def _section_coords(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 2)`` jittered hexagonal-grid points filling a wobbly disc."""
    row_step = _SPACING * math.sqrt(3) / 2
    radius = math.sqrt(n * _SPACING * row_step / math.pi) * 1.25 + 2 * _SPACING
    n_cols = int(math.ceil(2 * radius / _SPACING)) + 1
    n_rows = int(math.ceil(2 * radius / row_step)) + 1
    rows, cols = np.divmod(np.arange(n_rows * n_cols), n_cols)
    x = cols * _SPACING + (rows % 2) * (_SPACING / 2) - radius
    y = rows * row_step - radius
    angle = np.arctan2(y, x)
    wobble = 1 + 0.08 * np.sin(3 * angle + rng.uniform(0, 2 * np.pi)) + 0.05 * np.sin(
        5 * angle + rng.uniform(0, 2 * np.pi)
    )
    keep = np.sort(np.argsort(np.hypot(x, y) * wobble, kind="stable")[:n])
    phi = rng.uniform(0, 2 * np.pi, size=n)
    r = _JITTER * _SPACING * np.sqrt(rng.uniform(size=n))
    xy = np.column_stack([x[keep] + r * np.cos(phi), y[keep] + r * np.sin(phi)])
    return xy - xy.min(axis=0)


def _domains(rng: np.random.Generator, xy: np.ndarray, n_domains: int) -> np.ndarray:
    """Domain index of each cell: bands across y, boundaries perturbed by a wave."""
    span = np.ptp(xy, axis=0) + 1e-9
    u = xy[:, 0] / span[0]
    v = xy[:, 1] / span[1]
    domain = np.zeros(len(xy), dtype=np.int64)
    for j in range(1, n_domains):
        freq = rng.uniform(0.7, 1.6)
        phase = rng.uniform(0, 2 * np.pi)
        boundary = j / n_domains + 0.35 / n_domains * np.sin(2 * np.pi * freq * u + phase)
        domain += v > boundary
    return domain


def _niches(rng: np.random.Generator, xy: np.ndarray, *, plant: bool) -> np.ndarray:
    """Niche code per cell: 0 none, 1 immune aggregate, 2 planted niche."""
    n = len(xy)
    density = 2 / (math.sqrt(3) * _SPACING**2)  # cells per unit area
    niche = np.zeros(n, dtype=np.int64)
    for _ in range(max(1, round(n / 2500))):
        centre = xy[rng.integers(n)]
        radius = math.sqrt(rng.uniform(60, 150) / (math.pi * density))
        niche[np.hypot(*(xy - centre).T) < radius] = 1
    if plant:
        mid = xy.mean(axis=0)
        dist_mid = np.hypot(*(xy - mid).T)
        inner = np.flatnonzero(dist_mid <= 0.4 * dist_mid.max())
        centre = xy[inner[rng.integers(len(inner))]]
        radius = math.sqrt(max(30, 0.04 * n) / (math.pi * density))
        niche[np.hypot(*(xy - centre).T) < radius] = 2
    return niche


def _sample_types(
    rng: np.random.Generator,
    domain: np.ndarray,
    niche: np.ndarray,
    n_domains: int,
    type_names: list[str],
) -> np.ndarray:
    """Cell-type code per cell from a domain- and niche-dependent composition."""
    n_types = len(type_names)
    comp = rng.gamma(0.6, size=(n_domains, n_types)) + 0.02
    comp /= comp.sum(axis=1, keepdims=True)
    immune = np.zeros(n_types)
    for name, weight in _IMMUNE_MIX.items():
        if name in type_names:
            immune[type_names.index(name)] = weight
    immune /= immune.sum()
    tumour = np.zeros(n_types)
    tumour[type_names.index(_NICHE_TYPE)] = 1.0
    mixes = (lambda c: c, lambda c: 0.15 * c + 0.85 * immune, lambda c: 0.3 * c + 0.7 * tumour)
    cell_type = np.empty(len(domain), dtype=np.int64)
    group = domain * 3 + niche
    for g in np.unique(group):
        idx = np.flatnonzero(group == g)
        p = mixes[g % 3](comp[g // 3])
        cell_type[idx] = rng.choice(n_types, size=len(idx), p=p / p.sum())
    return cell_type


def _neighbour_fraction(xy: np.ndarray, is_type: np.ndarray) -> np.ndarray:
    """Fraction of ``is_type`` cells among each cell's k nearest neighbours."""
    k = min(_NEIGHBOUR_K, len(xy) - 1)
    _, idx = cKDTree(xy).query(xy, k=k + 1)
    return is_type[idx[:, 1:]].mean(axis=1)


# --- expression ------------------------------------------------------------------


@dataclass(frozen=True)
class _Programme:
    """Gene programmes: per-type weights, gene sets and dispersions."""

    weights: np.ndarray  # (n_types, n_genes) float32 exp(base log-mean)
    theta: np.ndarray  # (n_genes,) gamma shape (inverse dispersion)
    markers: list[np.ndarray]  # per type, marker gene indices
    nbr_genes: np.ndarray  # neighbour-programme gene indices
    niche_genes: np.ndarray  # activation-programme gene indices
    niche_weight: np.ndarray  # (n_niche,) float32 exp(log-mean) of activated cells
    top_gene: np.ndarray  # (n_types,) most expressed gene per type


def _programme(rng: np.random.Generator, n_genes: int, n_types: int) -> _Programme:
    n_markers = int(np.clip(n_genes // (4 * n_types), 2, 10))
    n_prog = int(np.clip(n_genes // 20, 3, 20))
    perm = rng.permutation(n_genes)
    markers = [np.sort(perm[t * n_markers : (t + 1) * n_markers]) for t in range(n_types)]
    start = n_types * n_markers
    nbr_genes = np.sort(perm[start : start + n_prog])
    niche_genes = np.sort(perm[start + n_prog : start + 2 * n_prog])

    log_base = rng.normal(0.0, 1.2, size=n_genes)
    log_base[np.concatenate(markers)] = rng.normal(-1.5, 0.5, size=start)
    log_base[nbr_genes] = rng.normal(0.0, 0.3, size=n_prog)
    log_base[niche_genes] = -7.0  # silent outside the planted niche
    log_mean = np.tile(log_base, (n_types, 1))
    for t, m in enumerate(markers):
        log_mean[t, m] += rng.uniform(3.0, 4.0, size=len(m))
    theta = np.clip(np.exp(rng.normal(math.log(3.0), 0.6, size=n_genes)), 0.5, 50.0)
    niche_log = rng.normal(1.0, 0.3, size=n_prog)
    return _Programme(
        weights=np.exp(log_mean).astype(np.float32),
        theta=theta,
        markers=markers,
        nbr_genes=nbr_genes,
        niche_genes=niche_genes,
        niche_weight=np.exp(niche_log).astype(np.float32),
        top_gene=np.argmax(log_mean, axis=1),
    )


def _sample_counts(
    prog: _Programme,
    cell_type: np.ndarray,
    nbr_frac: np.ndarray,
    activated: np.ndarray,
    library: np.ndarray,
    seed_seq: np.random.SeedSequence,
    dtype: np.dtype,
) -> sp.csr_matrix:
    """Negative-binomial counts, generated in chunks of cells and stacked as CSR.

    Only one ``(chunk, n_genes)`` dense block exists at a time. Its non-zeros
    are appended to the CSR buffers, which grow in place (``ndarray.resize``,
    a ``realloc``), so peak memory stays close to the size of the result. Each
    chunk has its own generator spawned from ``seed_seq``.
    """
    n_cells, n_genes = len(cell_type), prog.weights.shape[1]
    chunk = max(1, _CHUNK_ENTRIES // n_genes)
    starts = range(0, n_cells, chunk)
    rngs = [np.random.default_rng(s) for s in seed_seq.spawn(len(starts))]
    nbr_boost = np.exp(_NEIGHBOUR_BETA * nbr_frac).astype(np.float32)
    data = np.empty(0, dtype=dtype)
    indices = np.empty(0, dtype=np.int32)
    row_nnz = np.empty(n_cells, dtype=np.int64)
    pos = 0
    for rng, lo in zip(rngs, starts):
        hi = min(lo + chunk, n_cells)
        types = cell_type[lo:hi]
        mu = np.take(prog.weights, types, axis=0)  # (m, n_genes) float32 weights
        mu[:, prog.nbr_genes] *= nbr_boost[lo:hi, None]
        act = np.flatnonzero(activated[lo:hi])
        if len(act):
            mu[np.ix_(act, prog.niche_genes)] = prog.niche_weight
        mu *= (library[lo:hi] / mu.sum(axis=1, dtype=np.float64)).astype(np.float32)[:, None]
        counts = _negative_binomial(rng, mu, prog.theta)
        del mu
        empty = np.flatnonzero(counts.sum(axis=1) == 0)
        counts[empty, prog.top_gene[types[empty]]] = 1
        mask = counts != 0
        flat = np.flatnonzero(mask)
        row_nnz[lo:hi] = mask.sum(axis=1)
        end = pos + len(flat)
        if end > len(data):  # grow: room for the rest at this chunk's density, + 10%
            capacity = max(end, int(end / hi * n_cells * 1.1) + 1)
            data.resize(capacity, refcheck=False)
            indices.resize(capacity, refcheck=False)
        data[pos:end] = counts.reshape(-1)[flat]
        indices[pos:end] = flat % n_genes
        pos = end
        del counts, mask, flat
    data.resize(pos, refcheck=False)
    indices.resize(pos, refcheck=False)
    idx_dtype = np.int32 if pos < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(n_cells + 1, dtype=idx_dtype)
    np.cumsum(row_nnz, out=indptr[1:])
    indices = indices.astype(idx_dtype, copy=False)
    return sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))


def _negative_binomial(rng: np.random.Generator, mu: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Draw negative-binomial counts with mean ``mu`` and shape ``theta``.

    ``x ~ Poisson(mu * G)``, ``G ~ Gamma(theta, 1 / theta)``, so
    ``Var x = mu + mu**2 / theta``. Entries with a mean above ``_MU_SWITCH`` are
    drawn exactly that way (gamma, then Poisson); the many small means, where
    most counts are zero, are drawn from the same distribution by inversion of
    its CDF, which is several times faster than a gamma and a Poisson draw each.

    Parameters
    ----------
    rng
        Random generator.
    mu
        ``(m, n_genes)`` float32 means.
    theta
        ``(n_genes,)`` gamma shapes (inverse dispersions).

    Returns
    -------
    numpy.ndarray
        ``(m, n_genes)`` int32 counts.
    """
    m, g = mu.shape
    counts = np.zeros((m, g), dtype=np.int32)
    flat_counts = counts.reshape(-1)
    u = rng.random(size=(m, g), dtype=np.float32)
    screen = mu / theta.astype(np.float32)  # float32 screen: P(x = 0) * 0.999
    np.log1p(screen, out=screen)
    screen *= -theta.astype(np.float32)
    np.exp(screen, out=screen)
    screen *= 0.999
    big = mu > _MU_SWITCH
    candidate = u >= screen
    candidate &= ~big
    del screen
    # inversion for small means, in float64: x = #{k : cdf(k) <= u}, with
    # p(k+1) = p(k) * (k + theta) / (k + 1) * mu / (mu + theta)
    idx = np.flatnonzero(candidate)
    del candidate
    th = theta[idx % g]
    mu_i = mu.reshape(-1)[idx].astype(np.float64)
    uu = u.reshape(-1)[idx].astype(np.float64)
    del u
    p = np.exp(-th * np.log1p(mu_i / th))
    q = mu_i / (mu_i + th)
    cdf = p.copy()
    cnt = np.zeros(len(idx), dtype=np.int32)
    k = 0
    while len(idx):
        cnt += uu >= cdf
        if k in (2, 5) or (k and k % 8 == 0):  # now and then, write out and drop finished entries
            done = (uu < cdf) | (p == 0)  # p underflows only far beyond any count seen
            flat_counts[idx[done]] = cnt[done]
            keep = ~done
            idx, p, cdf, uu, th, q, cnt = (a[keep] for a in (idx, p, cdf, uu, th, q, cnt))
        p *= (k + th) / (k + 1) * q
        cdf += p
        k += 1
    # gamma-Poisson for large means
    big_idx = np.flatnonzero(big)
    if len(big_idx):
        th_b = theta[big_idx % g]
        lam = mu.reshape(-1)[big_idx] * rng.standard_gamma(th_b) / th_b
        flat_counts[big_idx] = rng.poisson(lam)
    return counts


def _tile_rows(value, n_copies: int):
    """Stack ``n_copies`` copies of a matrix, DataFrame or array along rows."""
    if isinstance(value, pd.DataFrame):
        return pd.concat([value] * n_copies, ignore_index=True)
    if sp.issparse(value):
        csr = sp.csr_matrix(value)
        n_rows = csr.shape[0]
        total = csr.nnz * n_copies
        idx_dtype = np.int32 if total < np.iinfo(np.int32).max else np.int64
        indptr = np.empty(n_rows * n_copies + 1, dtype=idx_dtype)
        indptr[0] = 0
        base = csr.indptr[1:].astype(idx_dtype)
        for i in range(n_copies):
            indptr[1 + i * n_rows : 1 + (i + 1) * n_rows] = base + i * csr.nnz
        return sp.csr_matrix(
            (np.tile(csr.data, n_copies), np.tile(csr.indices.astype(idx_dtype), n_copies), indptr),
            shape=(n_rows * n_copies, csr.shape[1]),
        )
    arr = np.asarray(value)
    return np.concatenate([arr] * n_copies, axis=0)
