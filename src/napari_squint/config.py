"""Every option of both models, in one validated shape shared by the Python API, the CLI and the plugin.

A model's configuration is a dataclass whose defaults are defined here once:
:class:`SquintConfig` (three parts: :class:`~napari_squint.data.prepare.GraphConfig`,
:class:`ModelConfig`, :class:`TrainConfig`) and :class:`CifmConfig` (one part).
Both offer the same methods:

``update(**options)``
    set options by name wherever they live; an unknown name or a bad value
    raises ``ValueError`` naming the option and the value;
``validate()``
    check every value (also run on construction, ``__post_init__``);
``to_dict()`` / ``from_dict(d)``
    the JSON form saved beside the weights;
``option_names()``
    every option name (what ``update`` accepts);
``epochs``
    the epoch count of one ``train()`` call (the model's default epoch count
    is the class default, :data:`SQUINT_EPOCHS` / :data:`CIFM_EPOCHS`).

This module sits below ``models/`` and ``train/``: both read it, neither is
imported by it.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, fields

from napari_squint.data.prepare import GraphConfig

__all__ = ["CIFM_EPOCHS", "SQUINT_EPOCHS", "CifmConfig", "GraphConfig", "ModelConfig", "SquintConfig",
           "TrainConfig"]

#: default epochs of one SQuINT ``train()`` (every entry point: API, CLI, demo, benchmark, widgets)
SQUINT_EPOCHS = 30
#: default epochs of one CIFM ``train()``
CIFM_EPOCHS = 60


# ------------------------------------------------------------------ checks
def _fail(model: str, name: str, value, what: str):
    raise ValueError(f"{model} option {name} must be {what}, got {value!r}")


def _integer(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


#: rule name -> (test, what a good value is); ``optional_*`` rules also accept None
_RULES = {
    "pos_int": (lambda v: _integer(v) and v >= 1, "a positive integer"),
    "nonneg_int": (lambda v: _integer(v) and v >= 0, "a non-negative integer"),
    "pos_float": (lambda v: _real(v) and v > 0, "a positive number"),
    "nonneg_float": (lambda v: _real(v) and v >= 0, "a non-negative number"),
    "unit": (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "open_unit": (lambda v: _real(v) and 0 < v < 1, "a number in (0, 1)"),
    "right_open_unit": (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "booleans": (lambda v: isinstance(v, bool), "True or False"),
}


def check_options(model: str, obj, *, choices: dict | None = None, **rules) -> None:
    """Check the named attributes of ``obj``; the first bad one raises ``ValueError`` naming it and its value.

    ``rules`` maps a rule of :data:`_RULES` (``pos_int=("k", "hidden")``, ``unit=(...)``...) or its
    ``optional_`` form (None also accepted) to attribute names; ``choices`` maps a name to its allowed values.
    """
    for rule, names in rules.items():
        optional = rule.startswith("optional_")
        test, what = _RULES[rule.removeprefix("optional_")]
        for name in names:
            v = getattr(obj, name)
            if not ((optional and v is None) or test(v)):
                _fail(model, name, v, what + (" or None" if optional else ""))
    for name, allowed in (choices or {}).items():
        v = getattr(obj, name)
        if v not in allowed:
            _fail(model, name, v, f"one of {tuple(allowed)}")


def _build(kind, values: dict, model: str):
    names = {f.name for f in fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {model} option(s): {sorted(unknown)}")
    return kind(**values)


# ------------------------------------------------------------------ SQuINT
@dataclass
class ModelConfig:
    """Architecture of the SQuINT module (paper section 4.2)."""

    hidden: int = 128  #: width of the encoder MLP and decoder
    #: the encoder reads at most this many genes: the panel's most variable ones (scanpy's seurat_v3 on the training
    #: counts, per section); the decoders still predict every gene. None: every gene. Hundreds of genes that do not
    #: depend on the cell type swamp the encoder's input and it collapses (docs/benchmarks.md, the wide panel)
    input_genes: int | None = None
    latent: int = 64  #: latent width (split across codebook heads)
    codebook_size: int = 32  #: codes per head
    heads: int = 2  #: codebook heads; vocabulary = codebook_size ** heads
    ema_decay: float = 0.8  #: EMA decay of the codebook
    dead_threshold: float = 0.05  #: EMA cells-per-batch under which a code is re-seeded
    batch_embed: int = 8  #: width of the learned section (batch) embedding
    adj_dim: int = 32  #: width of the adjacency decoder's edge vectors
    use_covariates: bool = True  #: False gives the paper's "SQuINT w/o C" ablation
    learnable_mask: bool = True  #: False gives the zero-mask ablation (appendix C.3)
    #: a head that predicts, for a masked cell, the code it gets when observed (beyond the paper; in-painting decodes
    #: a mixture of, or draws, tokens from it instead of taking the mask-token latent's nearest code). It is fitted
    #: after training, with the encoder frozen (TrainConfig.code_head_epochs)
    code_head: bool = True
    #: the masked-code head also reads its observed neighbours' codes (per head, the share of them holding each code)
    code_head_context: bool = False
    #: in-painting decodes the masked-code head's this many most likely tokens, mixed by their probabilities
    token_mixture: int = 1
    #: temperature of that mixture's weights (softmax of the summed per-head log-probabilities / temperature)
    token_temperature: float = 1.0
    #: strength of the local residual correction of draw="logmean" in-painting (1: the full mean residual)
    residual_weight: float = 1.0
    #: measured microenvironments averaged into each target's residual correction (None: the graph's k)
    residual_k: int | None = None
    #: draw="logmean": widen the spread of the cells imputed together around their mean by this factor, gene by
    #: gene in log-normalised space (1: none; api/squint_impute.py, widen_spread)
    spread: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> ModelConfig:
        check_options("SQuINT", self, pos_int=("hidden", "latent", "codebook_size", "heads", "batch_embed", "adj_dim",
                                               "token_mixture"),
                      unit=("ema_decay",), nonneg_float=("dead_threshold", "residual_weight"),
                      pos_float=("spread", "token_temperature"), optional_pos_int=("residual_k", "input_genes"),
                      booleans=("use_covariates", "learnable_mask", "code_head", "code_head_context"))
        if self.latent % self.heads:
            _fail("SQuINT", "latent", self.latent, f"a multiple of heads={self.heads}")
        return self


@dataclass
class TrainConfig:
    """Optimisation settings of SQuINT."""

    epochs: int = SQUINT_EPOCHS
    batch_size: int = 512  #: seed cells per mini-batch (whole spatial tiles)
    lr: float = 5e-3
    weight_decay: float = 1e-4
    mask_start: float = 0.2  #: masked fraction at the first epoch
    mask_end: float = 0.6  #: masked fraction at the last epoch
    mask_noise: float = 0.1  #: std of the noise added to the mask token
    masked_weight: float = 1.0  #: weight of masked cells in the attribute losses (1 = paper)
    lambda_x: float = 1.0  #: NB attribute loss weight
    lambda_cell: float = 0.5  #: NB loss on the cell's own counts (beyond the paper: per-cell imputation)
    lambda_a: float = 0.1  #: adjacency BCE weight
    code_head_epochs: int = 5  #: passes over the cells to fit the masked-code head after training (encoder frozen)
    #: also fit the head on test-like passes: contiguous holes whose cells read their nearest observed cells
    #: (train/code_head.py; what method="context" in-painting shows the model). Off by default: on the MERFISH
    #: patch benchmark it changed no metric beyond the seed spread (docs/imputation.md)
    code_head_contexts: bool = False
    #: after training, choose ModelConfig.residual_weight and ModelConfig.spread by validation on pseudo-patches
    #: of the training cells (api/squint_calibrate.py): calibration of the in-painting output, per slide
    calibrate_output: bool = False
    #: with calibrate_output: its discs are a validation split, held out of training as well (not only masked
    #: when imputed), so the scores are not flattered by cells the model was trained on
    calibrate_holdout: bool = False
    lambda_e: float = 1.0  #: VQ (code + commitment) weight
    lambda_m: float = 1e-4  #: ||m||^2 weight
    #: NB dispersion start: "constant" (the module's theta = e^2 for X_nbr, e for X) or "moments" (method of moments
    #: under the mean-profile model: absorbs all biological variation as over-dispersion, which flattens the
    #: likelihood and let the latents collapse on the synthetic tissue)
    theta_init: str = "constant"
    theta_lr_scale: float = 10.0  #: learning-rate multiplier of the NB dispersions
    kmeans_cells: int = 20000  #: cells used for k-means initialisation
    batch_unknown_p: float = 0.1  #: chance a cell's section id is hidden (learns an "unknown slide" id)
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None  #: torch CPU threads (None: NAPARI_SQUINT_THREADS, else train/threads.py's policy)
    amp: bool = True  #: bf16 autocast on CUDA (ignored on CPU)
    prefetch: int = 2  #: batches assembled ahead in a thread (0: none; used when train/threads.py finds a core)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> TrainConfig:
        check_options("SQuINT", self, pos_int=("epochs", "batch_size", "kmeans_cells"),
                      nonneg_int=("code_head_epochs", "seed", "prefetch"),
                      pos_float=("lr", "theta_lr_scale"),
                      nonneg_float=("weight_decay", "mask_noise", "masked_weight", "lambda_x", "lambda_cell",
                                    "lambda_a", "lambda_e", "lambda_m"),
                      unit=("mask_start", "mask_end", "batch_unknown_p"), optional_pos_int=("num_threads",),
                      booleans=("code_head_contexts", "calibrate_output", "calibrate_holdout", "amp"),
                      choices={"theta_init": ("constant", "moments")})
        if not isinstance(self.device, str):
            _fail("SQuINT", "device", self.device, "a device name such as 'auto', 'cpu' or 'cuda:0'")
        return self


def _validate_graph(g: GraphConfig) -> None:
    check_options("SQuINT", g, pos_int=("k", "max_degree", "n_rbf", "tile_cells"), pos_float=("rbf_max",))


@dataclass
class SquintConfig:
    """Every SQuINT option: the graph, the module's architecture and the optimisation."""

    graph: GraphConfig = field(default_factory=GraphConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.validate()

    def _parts(self):
        return (self.graph, self.model, self.train)

    def validate(self) -> SquintConfig:
        """Check every value; raises ``ValueError`` naming the option."""
        _validate_graph(self.graph)
        self.model.validate()
        self.train.validate()
        return self

    @property
    def epochs(self) -> int:
        return self.train.epochs

    @property
    def seed(self) -> int:
        return self.train.seed

    @property
    def device(self) -> str:
        return self.train.device

    @property
    def num_threads(self) -> int | None:
        return self.train.num_threads

    @classmethod
    def option_names(cls) -> set[str]:
        return {f.name for part in (GraphConfig, ModelConfig, TrainConfig) for f in fields(part)}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SquintConfig:
        return cls(graph=_build(GraphConfig, d.get("graph", {}), "SQuINT"),
                   model=_build(ModelConfig, d.get("model", {}), "SQuINT"),
                   train=_build(TrainConfig, d.get("train", {}), "SQuINT"))

    def update(self, **overrides) -> SquintConfig:
        """Set options by name wherever they live (``epochs=5``, ``k=10``...), then validate."""
        for key, value in overrides.items():
            for part in self._parts():
                if key in {f.name for f in fields(part)}:
                    setattr(part, key, value)
                    break
            else:
                raise ValueError(f"unknown SQuINT option {key!r} (options: {sorted(self.option_names())})")
        return self.validate()


# ------------------------------------------------------------------ CIFM
@dataclass
class CifmConfig:
    """Every CIFM option. Defaults are sized for a CPU; the paper's model is far larger."""

    # --- geometric graph (appendix B.1)
    radius: float | None = None  #: radius in slide units (paper: 20 µm); None: radius_factor * median NN distance
    radius_factor: float = 3.0  #: default radius in median nearest-neighbour distances (see docs/cifm.md)
    max_neighbours: int | None = 32  #: degree cap of the radius graph (mutual nearest), None for none
    k: int = 8  #: kNN of the PreparedSlide: X_nbr / imputed_nbr mean the same as for SQuINT
    max_degree: int = 16  #: width of the kNN table
    tile_cells: int = 256  #: cells per spatial tile (mini-batch unit)
    # --- architecture (appendix B.2)
    hidden: int = 64  #: width of the EGNN layers
    latent: int = 32  #: width D of the encoder output and of the padding embedding e
    layers: int = 2  #: void-invariant EGNN layers in the encoder and in the decoder (each)
    act: str = "silu"  #: zero-preserving activation of the bias-free MLPs
    coord_scale: float = 0.1  #: scale of the coordinate update (eq. 13)
    # --- self-supervised training (appendix B.3)
    mask_ratio: float = 0.2  #: fraction of cells removed per mini-batch (paper: 5 %; 0.2 chosen on MERFISH, docs/cifm.md)
    blob_frac: float = 0.0  #: share of the masked cells drawn as contiguous blobs (0: scattered cells, the paper)
    blob_cells: int = 32  #: largest blob, in cells (each blob is the 1..blob_cells nearest cells of a random cell)
    min_steps: int = 0  #: least optimiser steps per train() call: a small slide repeats its tiles within each epoch
    #: share of the training cells (whole spatial tiles) kept out of the loss to choose the training length: the
    #: learning rate stays at ``lr`` and drops 5x when their masked-cell loss has not improved for ``patience``
    #: epochs, training stops at the third such plateau (or after ``epochs``) and the best weights are kept;
    #: every epoch is then at least 50 steps (train/cifm_loop.py). 0: ``epochs`` epochs on the ``lr_schedule``
    val_frac: float = 0.1  #: chosen on MERFISH Animal 1 (docs/cifm.md, "Training length chosen by validation")
    patience: int = 3  #: epochs without a better validation loss before the learning rate drops (val_frac > 0)
    impute_path: str = "infill"  #: impute_cells: "infill" (ring by ring from the observed cells) or "oneshot"
    #: in-painting (impute_cells and the Imputer) adds the mean masked-reconstruction error of each target's k nearest
    #: measured cells (api/cifm_residual.py; off: docs/cifm.md)
    residual: bool = False
    #: draw="sample": each imputed cell is one of its ``donors`` best-matched measured cells (predictive mean
    #: matching, api/cifm_pmm.py; 5 as in common multiple-imputation practice, not tuned)
    donors: int = 5
    #: on log expression: "balanced_mse_capped" (zeros weigh min(0.5, their share of the panel): eq. 15 on sparse
    #: panels, share weights on dense ones; models/cifm_loss.py), "balanced_mse" (eq. 15), "mse"; or "poisson" on
    #: expression per 10^4. Empty cells (no count) are never targets
    loss: str = "balanced_mse_capped"
    epochs: int = CIFM_EPOCHS
    lr: float = 2e-3
    lr_schedule: str = "cosine"  #: "cosine" (decay to lr_min_frac * lr over the call's epochs) or "constant"
    lr_min_frac: float = 0.05
    weight_decay: float = 1e-5
    batch_size: int = 1024  #: core cells per mini-batch (whole tiles)
    halo_hops: int | None = None  #: halo around the core; None: exact receptive field (2 * layers)
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None  #: torch CPU threads (None: torch's default)
    infer_cells: int = 4096  #: core cells per inference chunk

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> CifmConfig:
        """Check every value; raises ``ValueError`` naming the option."""
        check_options("CIFM", self, pos_int=("k", "max_degree", "tile_cells", "hidden", "latent", "layers",
                                             "batch_size", "infer_cells", "epochs", "blob_cells", "patience",
                                             "donors"),
                      nonneg_int=("seed", "min_steps"), optional_pos_int=("max_neighbours", "num_threads"),
                      optional_nonneg_int=("halo_hops",), optional_pos_float=("radius",),
                      pos_float=("radius_factor", "lr", "coord_scale"), open_unit=("mask_ratio",),
                      unit=("lr_min_frac", "blob_frac"), right_open_unit=("val_frac",),
                      nonneg_float=("weight_decay", "grad_clip"),
                      booleans=("residual",),
                      choices={"lr_schedule": ("cosine", "constant"), "impute_path": ("oneshot", "infill"),
                               "loss": ("balanced_mse_capped", "balanced_mse", "mse", "poisson")})
        if not isinstance(self.act, str):
            _fail("CIFM", "act", self.act, "an activation name")
        if not isinstance(self.device, str):
            _fail("CIFM", "device", self.device, "a device name such as 'auto', 'cpu' or 'cuda:0'")
        return self

    @property
    def receptive_hops(self) -> int:
        """Hops that influence a decoded cell: encoder layers + decoder layers."""
        return 2 * int(self.layers)

    def graph_config(self) -> GraphConfig:
        """The kNN graph of the prepared slide (X_nbr, the kNN table, tiles)."""
        return GraphConfig(k=self.k, max_degree=self.max_degree, tile_cells=self.tile_cells)

    @classmethod
    def option_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CifmConfig:
        return _build(cls, d, "CIFM")

    def update(self, **overrides) -> CifmConfig:
        """Set options by name (``epochs=5``, ``radius=20``...), then validate; an unknown name raises."""
        names = self.option_names()
        for key, value in overrides.items():
            if key not in names:
                raise ValueError(f"unknown CIFM option {key!r} (options: {sorted(names)})")
            setattr(self, key, value)
        return self.validate()
