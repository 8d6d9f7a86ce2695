"""Every AnnData key that napari-squint reads by default or writes.

Keeping the names in one place lets the CLI, the Python API and the napari
widgets agree on them, and lets users find what a function wrote.
"""

from __future__ import annotations

# --- keys read by default ---------------------------------------------------
SECTION_KEY = "section"  #: obs column naming the section (slide / FOV / z-level)
SPATIAL_KEY = "spatial"  #: obsm key holding (n, 2) coordinates
CELL_TYPE_KEY = "cell_type"  #: obs column with cell-type labels, where present
Z_KEY = "z"  #: obs column with the z position of a section in a stack

# --- keys written -----------------------------------------------------------
TOKEN_KEY = "squint_token"  #: obs, categorical token id of every cell
CODES_KEY = "squint_codes"  #: obsm, (n, heads) code index per codebook head
LATENT_KEY = "squint_latent"  #: obsm, (n, d) pre-quantisation latent
QUANTISED_KEY = "squint_quantised"  #: obsm, (n, d) quantised latent
IMPUTED_LAYER = "imputed"  #: layers, per-cell imputed counts
IMPUTED_NBR_LAYER = "imputed_nbr"  #: layers, imputed microenvironment counts
CREATED_KEY = "squint_created"  #: obs bool, cell placed by the empty-region fill
HELDOUT_KEY = "squint_heldout"  #: obs bool, cell held out from training
ACTIVATION_KEY = "squint_activation"  #: obs float in [0, 1], activation score
PERTURBED_KEY = "squint_perturbed"  #: obs bool, expression replaced by a prototype
TOKEN_BEFORE_KEY = "squint_token_before"  #: obs, token before a perturbation
TOKEN_AFTER_KEY = "squint_token_after"  #: obs, token after a perturbation
CIFM_EMB_KEY = "cifm_microenv"  #: obsm, CIFM microenvironment embedding
CIFM_CELL_EMB_KEY = "cifm_cell"  #: obsm, CIFM cell embedding (edges removed)
UNS_KEY = "squint"  #: uns, parameters of every squint call, by function
CIFM_EMBED_UNS = "cifm_embed"  #: uns[UNS_KEY] entry written by Cifm.embed
REGION_KEY = "squint_region"  #: obs (categorical) of an in-painting result: the region of each output cell
RING_KEY = "squint_ring"  #: obs (int) of an in-painting result: infill ring (1 = next to measured cells; 0 one-shot)
SPLIT_KEY = "cifm_split"  #: obs column written by tasks.cifm_eval.regional_split when given an AnnData
INJECT_PREFIX = "cifm_inject"  #: prefix of the obs columns written by tasks.inject (InjectionResult.annotate)
CIFM_INJECT_UNS = "cifm_inject"  #: uns[UNS_KEY] entry written by tasks.inject (InjectionResult.annotate)
RESULTS_TABLE = "squint_cells"  #: SpatialData table holding the plugin's computed per-cell columns
CELLS_LAYER_META = "squint_layer"  #: napari layer metadata key: the cells a points layer shows (section, spacing)

# --- checkpoint files ---------------------------------------------------------
CKPT_WEIGHTS = "model.safetensors"
CKPT_WEIGHTS_PT = "weights.pt"
CKPT_CONFIG = "config.json"
CKPT_GENES = "genes.txt"
CKPT_META = "meta.json"

# --- imputation ---------------------------------------------------------------
#: what an imputed profile is: expected counts ("mean"), counts whose log-normalisation is the expected
#: log-normalised expression ("logmean"), or generated counts ("sample"); see tasks/impute.py
DRAWS = ("mean", "logmean", "sample")
