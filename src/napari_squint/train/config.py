"""Configuration dataclasses shared by the Python API, the CLI and the plugin."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from napari_squint.data.prepare import GraphConfig


@dataclass
class ModelConfig:
    """Architecture of the SQuINT module (paper section 4.2)."""

    hidden: int = 128  #: width of the encoder MLP and decoder
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


@dataclass
class TrainConfig:
    """Optimisation settings."""

    epochs: int = 30
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
    num_threads: int | None = None  #: torch CPU threads (None: torch's default)
    amp: bool = True  #: bf16 autocast on CUDA (ignored on CPU)
    prefetch: int = 2  #: batches assembled ahead in a background thread


@dataclass
class SquintConfig:
    graph: GraphConfig = field(default_factory=GraphConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SquintConfig:
        def build(kind, values):
            names = {f.name for f in fields(kind)}
            unknown = set(values) - names
            if unknown:
                raise ValueError(f"unknown {kind.__name__} option(s): {sorted(unknown)}")
            return kind(**values)

        return cls(
            graph=build(GraphConfig, d.get("graph", {})),
            model=build(ModelConfig, d.get("model", {})),
            train=build(TrainConfig, d.get("train", {})),
        )

    def update(self, **overrides) -> SquintConfig:
        """Set options by name wherever they live (``epochs=5``, ``k=10``...)."""
        for key, value in overrides.items():
            for part in (self.graph, self.model, self.train):
                if key in {f.name for f in fields(part)}:
                    setattr(part, key, value)
                    break
            else:
                raise ValueError(f"unknown SQuINT option {key!r}")
        return self
