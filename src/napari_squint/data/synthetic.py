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
distribution by CDF inversion, which is faster; see :mod:`napari_squint.data.synthetic_expression`).
"""

from __future__ import annotations

import math

import anndata
import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from napari_squint._constants import CELL_TYPE_KEY, SECTION_KEY, SPATIAL_KEY
from napari_squint.data.synthetic_expression import _programme, _sample_counts
from napari_squint.data.synthetic_tiles import _is_int_at_least, tile_sections  # noqa: F401  (tile_sections: this module's API)

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
_LIBRARY_SIGMA = 0.35  # log-scale spread of the library size


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
