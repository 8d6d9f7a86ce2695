"""The base class of the user-facing models (scvi-tools' pattern): AnnData in, AnnData out.

:class:`BaseModel` holds what every model shares: construction from AnnData
(genes, held-out cells, the prepared slide), :meth:`~BaseModel.prepare`,
:meth:`~BaseModel.train` (one rule for continuing: a second call numbers its
epochs after the previous ones and keeps the optimiser's state), progress
events, :meth:`~BaseModel.save` / :meth:`~BaseModel.load`. What a caller needs
to know about a model is a class attribute, never its name:

==================  ==========================================================
``has_tokens``      whether :meth:`tokens` assigns discrete tokens
``impute_methods``  the in-painting methods it offers
``default_method``  the method used when none is given
``draws``           what an imputed profile may be (``"mean"``, ``"logmean"``, ``"sample"``)
``default_draw``    the draw used when none is given
``supports_residual``  whether the local residual correction applies (with ``"logmean"``)
``nbr_modes``       how ``imputed_nbr`` may be formed
``substitutes``     what may replace an imputed ring's inputs in ``"infill"``
``perturbation``    how cells are perturbed: ``"replace"`` (token transitions) or ``"inject"``
``distributed_training``  whether ``squint train --distributed`` supports it
``label``           the name shown to users
==================  ==========================================================

``kind`` names the model in a saved folder (``meta.json``) and is read only
by :meth:`save`, :meth:`load` and :func:`napari_squint.api.load.load_any`.

A subclass provides ``config_class`` (a dataclass of :mod:`napari_squint.config`)
and a few hooks: :meth:`_make_module`, :meth:`_make_optimizer`,
:meth:`_iter_epochs`, and optionally :meth:`_after_prepare`,
:meth:`_after_training`, :meth:`_prepare_sections`, :meth:`_adapt_state`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint import __version__
from napari_squint.data.genes import align_genes, select_genes
from napari_squint.data.prepare import GraphConfig, PreparedSlide, prepare_slide
from napari_squint.data.validate import SlideError
from napari_squint.train.checkpoint import check_architecture, check_config_values, load_checkpoint, save_checkpoint
from napari_squint.train.device import resolve_device
from napari_squint.train.events import ProgressEvent, drive
from napari_squint.train.threads import policy_scope

__all__ = ["BaseModel"]


class BaseModel:
    """What every user-facing model shares.

    Parameters
    ----------
    adata
        Slide(s) with raw counts; several sections are stacked in one AnnData
        and distinguished by ``obs[section_key]``. Never modified. ``None``
        builds an empty model (used by :meth:`load`).
    section_key
        obs column naming sections; ``None`` for a single section.
    spatial_key
        obsm key of the coordinates, in any unit.
    layer
        Counts layer (default ``X``).
    genes
        ``"all"``, the number of highly variable genes, or a list of names.
    holdout
        ``(n,)`` bool mask of cells excluded from training.
    config
        The model's configuration (``config_class``); keyword options
        (``epochs=``, ``seed=``, ...) override it, unknown names raise.
    allow_non_counts
        Accept non-integer (normalised) values.
    """

    #: name of the model in a saved folder; read only by save/load
    kind: ClassVar[str] = ""
    #: the name shown to users
    label: ClassVar[str] = ""
    #: the configuration dataclass
    config_class: ClassVar[type]
    #: whether the model assigns discrete tokens (:meth:`tokens`)
    has_tokens: ClassVar[bool] = False
    #: in-painting methods offered (see :mod:`napari_squint.tasks.impute`)
    impute_methods: ClassVar[tuple[str, ...]] = ()
    default_method: ClassVar[str] = ""
    #: what an imputed profile may be
    draws: ClassVar[tuple[str, ...]] = ("mean",)
    default_draw: ClassVar[str] = "mean"
    #: whether the local residual correction applies (with draw="logmean")
    supports_residual: ClassVar[bool] = False
    #: how imputed_nbr may be formed ("sum": measured + imputed members; "decoder": the model's own head)
    nbr_modes: ClassVar[tuple[str, ...]] = ("sum",)
    #: what replaces an imputed ring's inputs in "infill"
    substitutes: ClassVar[tuple[str, ...]] = ("mean",)
    #: how cells are perturbed: "replace" (prototype expression, token transitions: tasks/perturb.py) or
    #: "inject" (simulated injection into the graph: tasks/inject.py)
    perturbation: ClassVar[str] = ""
    #: whether data-parallel training (train/distributed.py, ``squint train --distributed``) supports the model
    distributed_training: ClassVar[bool] = False

    def __init__(
        self,
        adata: AnnData | None,
        *,
        section_key: str | None = K.SECTION_KEY,
        spatial_key: str = K.SPATIAL_KEY,
        layer: str | None = None,
        genes: int | str | Sequence[str] | None = "all",
        holdout: np.ndarray | None = None,
        config=None,
        allow_non_counts: bool = False,
        **options,
    ):
        self.config = (config or self.config_class()).update(**options)
        self.section_key, self.spatial_key, self.layer = section_key, spatial_key, layer
        self.allow_non_counts = allow_non_counts
        self.device = resolve_device(self.config.device)
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        self.history: list[dict] = []
        self.meta: dict = {}
        self.data: PreparedSlide | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        #: (slide without the held-out cells, validation mask over it) when the model holds a validation split
        self._validation: tuple[AnnData, np.ndarray] | None = None
        if adata is None:  # used by load()
            return
        if section_key is not None and section_key not in adata.obs:
            raise SlideError(f"section key {section_key!r} not found in adata.obs (columns: {list(adata.obs.columns)})")
        train_adata = adata
        if holdout is not None:
            holdout = np.asarray(holdout, dtype=bool)
            if holdout.shape != (adata.n_obs,):
                raise SlideError(f"holdout mask has shape {holdout.shape}; expected ({adata.n_obs},)")
            if holdout.all():
                raise SlideError("holdout covers every cell: nothing is left to train on")
            train_adata = adata[~holdout]
        val = self._validation_split(adata, holdout)
        if val is not None:  # a validation split of the training cells, held out of training too
            keep = ~holdout if holdout is not None else np.ones(adata.n_obs, dtype=bool)
            self._validation = (adata[keep], np.asarray(val, dtype=bool)[keep])
            holdout = ~keep | val
            train_adata = adata[~holdout]
        self.genes = select_genes(train_adata, genes, layer=layer,
                                  batch_key=section_key if isinstance(genes, int) and section_key else None)
        t0 = time.perf_counter()
        self.data = prepare_slide(train_adata, self.genes, section_key=section_key, spatial_key=spatial_key,
                                  layer=layer, graph=self.graph_config(), allow_non_counts=allow_non_counts)
        self.sections = list(self.data.sections)
        self._after_prepare()
        self.meta.update(prepare_seconds=time.perf_counter() - t0, n_train_cells=int(self.data.n_cells),
                         heldout_cells=adata.obs_names[holdout].tolist() if holdout is not None else [])
        self._build()
        self._init_from_data()

    # ------------------------------------------------------------------ hooks
    def graph_config(self) -> GraphConfig:
        """The kNN graph of the prepared slide (X_nbr, neighbour table, tiles)."""
        raise NotImplementedError

    def _validation_split(self, adata: AnnData, holdout: np.ndarray | None) -> np.ndarray | None:
        """``(n,)`` bool over ``adata``: cells outside ``holdout`` kept out of training for a validation after
        it (:attr:`_validation`), or None (the default: no split)."""
        return None

    def _after_prepare(self) -> None:
        """Model-specific structures built from ``self.data`` (e.g. CIFM's radius graph)."""

    def _make_module(self, n_genes: int, n_sections: int) -> torch.nn.Module:
        raise NotImplementedError

    def _build(self) -> None:
        torch.manual_seed(self.config.seed)
        self.module = self._make_module(len(self.genes), len(self.sections)).to(self.device)

    def _init_from_data(self) -> None:
        """Initialise the fresh module from the training data (before any training)."""

    def _make_optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def _iter_epochs(self, start: int, stop: int, optimizer: torch.optim.Optimizer):
        """Generator of :class:`ProgressEvent` training epochs ``start .. stop - 1``."""
        raise NotImplementedError

    def _after_training(self):
        """Generator of :class:`ProgressEvent` run after the epochs of each :meth:`train` call."""
        return
        yield

    def _describe(self) -> str:
        return (f"{self.data.n_cells} cells, {len(self.genes)} genes, {len(self.sections)} sections "
                f"on {self.device}")

    def _prepare_sections(self) -> list[str] | None:
        """Sections a new slide must use (None: its own)."""
        return None

    def _adapt_state(self, state: dict) -> None:
        """Adjust the configuration or module to a loaded state dict (before and after :meth:`_build`)."""

    def _load_state(self, state: dict) -> None:
        self.module.load_state_dict(state)

    # ------------------------------------------------------------------ train
    @classmethod
    def default_epochs(cls) -> int:
        """Epochs of one :meth:`train` call by default (every entry point uses it)."""
        return cls.config_class().epochs

    def _set_epochs(self, epochs: int) -> None:
        self.config.update(epochs=int(epochs))

    def iter_train(self, *, epochs: int | None = None):
        """Generator of :class:`ProgressEvent`; its return value is the history of this call.

        Runs ``epochs`` (default ``config``'s) epochs. A second call continues
        from the current weights and optimiser state, numbering its epochs
        after the previous ones. Closing the generator (cancelling) keeps the
        finished epochs.
        """
        if self.data is None:
            raise RuntimeError(f"this model was loaded without training data; create {type(self).__name__}(adata) "
                               "to train")
        if epochs is not None:
            self._set_epochs(epochs)
        start = len(self.history)
        if self._optimizer is None:
            self._optimizer = self._make_optimizer()
        yield ProgressEvent("prepare", message=self._describe())
        # CPU threads for the epochs and what follows them (train/threads.py; napari's worker may set its own)
        with policy_scope(self.config.num_threads, device=self.device):
            gen = self._iter_epochs(start, start + int(self.config.epochs), self._optimizer)
            try:
                for ev in gen:
                    if ev.stage == "epoch":  # kept even if cancelled later
                        self.history.append(ev.metrics)
                    yield ev
            finally:
                gen.close()
            yield from self._after_training()
        return self.history[start:]

    def train(self, *, epochs: int | None = None, callback: Callable[[ProgressEvent], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> list[dict]:
        """Train the model; returns the per-epoch history of this call (partial when cancelled)."""
        n_before = len(self.history)
        t0 = time.perf_counter()
        _, cancelled = drive(self.iter_train(epochs=epochs), callback=callback, should_stop=should_stop)
        self.meta["train_seconds"] = self.meta.get("train_seconds", 0.0) + time.perf_counter() - t0
        self.meta["cancelled"] = cancelled
        return self.history[n_before:]

    # -------------------------------------------------------------- inference
    def prepare(self, adata: AnnData, *, align: bool = False) -> PreparedSlide:
        """The arrays of a slide for this model (model genes; see :meth:`_prepare_sections`)."""
        if align:
            adata = align_genes(adata, self.genes, layer=self.layer)
            layer = None
        else:
            layer = self.layer
        section_key = self.section_key if (self.section_key and self.section_key in adata.obs) else None
        return prepare_slide(adata, self.genes, section_key=section_key, spatial_key=self.spatial_key,
                             layer=layer, graph=self.graph_config(), sections=self._prepare_sections(),
                             allow_non_counts=self.allow_non_counts)

    def imputation_engine(self, data: PreparedSlide, section_labels: np.ndarray):
        """The model's in-painting engine on prepared ``data`` (:class:`~napari_squint.api.impute_engine.ImputeEngine`),
        used by :class:`napari_squint.tasks.impute.Imputer`."""
        raise NotImplementedError(f"{self.label} offers no in-painting")

    def summary(self) -> str:
        """One line describing the model for users (the plugin's model panel)."""
        return f"{self.label}: {len(self.genes)} genes, {len(self.sections)} sections"

    @staticmethod
    def _check_mask(data: PreparedSlide, masked) -> np.ndarray:
        masked = np.asarray(masked, dtype=bool)
        if masked.shape != (data.n_cells,):
            raise ValueError(f"masked has shape {masked.shape}; expected ({data.n_cells},)")
        return masked

    # ------------------------------------------------------------ save / load
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model folder (config, genes, sections, safetensors weights, history) atomically."""
        meta = {**self.meta, "version": __version__, "model": self.kind, "sections": self.sections,
                "section_key": self.section_key, "spatial_key": self.spatial_key, "layer": self.layer,
                "allow_non_counts": self.allow_non_counts, "history": self.history}
        # an existing folder is replaced only with overwrite=True and only when napari-squint wrote it
        return save_checkpoint(path, state_dict=self.module.state_dict(), config=self.config.to_dict(),
                               genes=self.genes, meta=meta, overwrite=overwrite)

    #: tensors whose length depends on the training data (not checked against the configuration)
    _variable_tensors: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None):
        """Load a saved model on any device, without unpickling."""
        state, config, genes, meta = load_checkpoint(path)  # checksum, finite weights, readable files
        saved = meta.get("model", "squint")  # folders written before CIFM existed name no model
        if saved != cls.kind:
            raise SlideError(f"{path} holds a {saved!r} model, not {cls.label}")
        # types, sizes and the config's own range checks, named against config.json, before allocating
        cfg = check_config_values(config, cls.config_class().to_dict(), path, meta=meta,
                                  build=cls.config_class.from_dict)
        if device is not None:
            cfg.update(device=device)
        self = cls(None, section_key=meta.get("section_key"), spatial_key=meta.get("spatial_key", K.SPATIAL_KEY),
                   layer=meta.get("layer"), config=cfg, allow_non_counts=meta.get("allow_non_counts", False))
        self.genes, self.sections = genes, list(meta["sections"])
        self.history, self.meta = list(meta.get("history", [])), meta
        self._adapt_state(state)
        check_architecture(lambda: self._make_module(len(genes), len(self.sections)), state, path,
                           variable=cls._variable_tensors)  # config, genes, sections vs weights
        self._build()
        self._load_state(state)
        self.module.to(self.device)
        return self
