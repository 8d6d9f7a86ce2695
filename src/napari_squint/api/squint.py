"""User-facing SQuINT model: AnnData in, AnnData out.

>>> model = Squint(adata, section_key="section", genes="all", epochs=30)
>>> model.train()
>>> model.tokens(adata)            # writes obs['squint_token'], obsm['squint_latent']
>>> model.save("my_model")
>>> model = Squint.load("my_model")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.api.base import BaseModel
from napari_squint.api.squint_impute import SquintImputeEngine
from napari_squint.config import SquintConfig
from napari_squint.data.batch import chunks, make_batch
from napari_squint.data.imputation import masked_depth
from napari_squint.data.prepare import GraphConfig, PreparedSlide
from napari_squint.models.squint import SquintModule
from napari_squint.nn.log_estimate import log_space_counts, log_space_counts_from_moments
from napari_squint.nn.nb import nb_log_likelihood, sample_nb
from napari_squint.train.code_head import code_shares, iter_fit_code_head
from napari_squint.train.events import ProgressEvent
from napari_squint.train.loop import iter_train, make_optimizer

#: tokens a generated profile (draw="sample") is drawn among: the head's 16 most likely
_SAMPLE_TOP = 16


def poisson_deviance(x: torch.Tensor, mu: torch.Tensor) -> float:
    """Mean Poisson deviance 2 [x log(x / mu) - (x - mu)] over all entries."""
    mu = mu.clamp(min=1e-8)
    term = torch.where(x > 0, x * torch.log(x / mu), torch.zeros_like(x))
    return float((2 * (term - (x - mu))).mean())


class Squint(BaseModel):
    """SQuINT: learn a vocabulary of discrete cell tokens from spatial transcriptomics.

    Construction, training, ``prepare``, ``save`` and ``load`` are
    :class:`~napari_squint.api.base.BaseModel`'s; ``config`` is a
    :class:`~napari_squint.config.SquintConfig` and keyword options
    (``epochs=``, ``k=``, ``codebook_size=``, ``use_covariates=``...) override it.
    ``holdout`` cells are excluded from training (inputs and losses).
    """

    kind = "squint"
    label = "SQuINT"
    config_class = SquintConfig
    has_tokens = True
    impute_methods = ("context", "infill", "oneshot")
    #: the better method on the Table 2 benchmark (docs/imputation.md)
    default_method = "context"
    draws = K.DRAWS
    #: better than "mean" on MMD and energy, on par on correlation (docs/imputation.md)
    default_draw = "logmean"
    supports_residual = True
    perturbation = "replace"
    distributed_training = True
    nbr_modes = ("sum", "decoder")
    substitutes = ("mean", "sample")
    _variable_tensors = ("token_codes", "token_counts")

    # ------------------------------------------------------------------ hooks
    def graph_config(self) -> GraphConfig:
        return self.config.graph

    def _prepare_sections(self) -> list[str]:
        return self.sections  # the section embedding knows these

    def _make_module(self, n_genes: int, n_sections: int) -> SquintModule:
        return SquintModule(n_genes, n_sections, self.config.graph.n_rbf, self.config.model)

    def _init_from_data(self) -> None:
        m = self.module
        if m.n_input < m.n_genes:  # the encoder reads the panel's most variable genes (ModelConfig.input_genes)
            from napari_squint.data.genes import most_variable

            idx = most_variable(self.data.counts, m.n_input, batch=self.data.batch)
            m.input_idx.copy_(torch.from_numpy(idx).to(m.input_idx.device))

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.module, self.config.train)

    def _iter_epochs(self, start: int, stop: int, optimizer: torch.optim.Optimizer):
        cfg = replace(self.config.train, epochs=stop)
        return iter_train(self.module, self.data, np.arange(self.data.n_cells), cfg, self.device,
                          optimizer=optimizer, start_epoch=start)

    def _validation_split(self, adata, holdout):
        t = self.config.train
        if not (t.calibrate_output and t.calibrate_holdout):
            return None
        from napari_squint.api.squint_calibrate import validation_discs

        return validation_discs(adata, holdout, section_key=self.section_key, spatial_key=self.spatial_key,
                                seed=t.seed)

    def _after_training(self):
        fit = yield from self.iter_fit_code_head()
        if fit:
            self.meta["code_head"] = fit
        if self.config.train.calibrate_output:
            from napari_squint.api.squint_calibrate import calibrate_output

            yield ProgressEvent("calibrate", message="choosing the residual weight and spread on training cells")
            calibrate_output(self)

    def iter_fit_code_head(self):
        """Record the training tokens and fit the masked-code head (encoder frozen); a generator of
        :class:`ProgressEvent` returning the fit's last record (see :mod:`napari_squint.train.code_head`)."""
        return iter_fit_code_head(self.module, self.data, np.arange(self.data.n_cells), self.config.train,
                                  self.device, context_k=self.config.graph.k)

    def _adapt_state(self, state: dict) -> None:
        if not any(k.startswith("code_head.") for k in state):  # saved before the masked-code head existed
            self.config.model.code_head = False
        if "input_idx" not in state:  # saved before the encoder's input could be narrowed: it read every gene
            self.config.model.input_genes = None
            state["input_idx"] = torch.arange(len(self.genes))

    def _load_state(self, state: dict) -> None:
        for key in ("token_codes", "token_counts"):
            if key in state:  # their length depends on the training data
                setattr(self.module, key, torch.empty_like(state[key]))
            else:
                state[key] = getattr(self.module, key)
        self.module.load_state_dict(state)

    # -------------------------------------------------------------- inference
    def imputation_engine(self, data: PreparedSlide, section_labels: np.ndarray) -> SquintImputeEngine:
        return SquintImputeEngine(self, data, section_labels)

    @torch.no_grad()
    def encode(self, data: PreparedSlide, *, masked: np.ndarray | None = None, cells: np.ndarray | None = None,
               batch_size: int = 8192, decode: bool = False,
               callback: Callable[[ProgressEvent], None] | None = None) -> dict[str, np.ndarray]:
        """Latents, codes and tokens of ``cells`` (default all) of prepared data.

        ``masked`` (n,) marks cells whose input is replaced by the learned mask
        token (imputation). ``decode=True`` adds ``probs``, the decoded gene
        proportions (rows sum to 1) of each cell's microenvironment.
        """
        self.module.eval()
        cells = np.arange(data.n_cells) if cells is None else np.asarray(cells, dtype=np.int64)
        lat, qs, codes, probs, probs_c = [], [], [], [], []
        total = int(np.ceil(cells.size / batch_size))
        for step, idx in enumerate(chunks(cells.size, batch_size)):
            if callback is not None:
                callback(ProgressEvent("encode", step=step, total=total, message=f"encoding {cells.size} cells"))
            b = make_batch(data, cells[idx], masked=masked, targets=False).to(self.device)
            h, c = self.module.encode(b)
            q, code, _ = self.module.codebook(h, update=False)
            lat.append(h.cpu())
            qs.append(q.cpu())
            codes.append(code.cpu())
            if decode:
                pn, pc = self.module.both_probs(q, c)
                probs.append(pn.cpu())
                probs_c.append(pc.cpu())
        codes_t = torch.cat(codes)
        out = {"latent": torch.cat(lat).numpy(), "quantised": torch.cat(qs).numpy(), "codes": codes_t.numpy(),
               "tokens": self.module.codebook.tokens(codes_t).numpy()}
        if decode:
            out["probs"] = torch.cat(probs).numpy()
            out["probs_cell"] = torch.cat(probs_c).numpy()
        return out

    def impute_cells(self, data: PreparedSlide, masked: np.ndarray, *, cells: np.ndarray | None = None,
                     library: np.ndarray | None = None, draw: str = "mean", top: int = 1,
                     seed: int = 0, context_codes: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Impute ``cells`` (default: the masked ones) with the learned mask token in the presence of C.

        Each masked cell is encoded with the mask token as its input. With the
        masked-code head (``ModelConfig.code_head``, the default), the head turns
        the cell's latent into a distribution over the tokens observed cells use
        in training (:meth:`code_mixture`); the ``top`` most likely ones (by
        default only the most likely: mixing 4 or 16 scored the same on the
        MERFISH benchmark, at 4 or 16 times the decoding) are decoded with the
        cell's own covariates C and mixed by their probabilities.
        ``draw="mean"`` gives the expected counts and reports the most likely
        token; ``draw="logmean"`` gives, from the same prediction, the counts
        whose log-normalised values are the expected log-normalised
        expression (:mod:`napari_squint.nn.log_estimate`; a mixture is
        matched to one negative binomial per gene by its mean and variance,
        the microenvironment uses the decoder's dispersion);
        ``draw="sample"`` draws one of the 16 most likely tokens by its
        probability, then negative-binomial counts from its decoded profile
        (generated counts). Without the head (models
        saved before it, or ``code_head=False``) the nearest code of the latent
        is decoded (the paper's code assignment). ``context_codes`` is passed to
        :meth:`code_mixture`.

        Gene proportions are scaled by an estimated read depth: a masked cell's
        library is the median library of the observed cells of its section
        (unless ``library`` (n,) is given), and its microenvironment's read
        depth sums the measured libraries of its observed members and the
        estimates of its masked ones.

        Returns
        -------
        dict with ``imputed`` (m, g) and ``imputed_nbr`` (m, g) counts (as
        ``draw`` asks), ``tokens`` (m,), ``codes`` (m, H), ``latent`` (m, d),
        ``cells`` (m,), and the predictive moments behind them: ``mean`` and
        ``var`` (m, g) of the cell's counts, ``probs_nbr`` (m, g) the
        decoder's microenvironment proportions, ``library`` (m,) and
        ``library_nbr`` (m,) the read depths used.
        """
        if draw not in K.DRAWS:
            raise ValueError(f"draw={draw!r}: expected one of {K.DRAWS}")
        masked = np.asarray(masked, dtype=bool)
        if masked.shape != (data.n_cells,):
            raise ValueError(f"masked has shape {masked.shape}; expected ({data.n_cells},)")
        cells = np.flatnonzero(masked) if cells is None else np.asarray(cells, dtype=np.int64)
        est = masked_depth(data, masked, library)
        nb = data.nbr[cells]
        lib_nbr = est[cells] + np.where(nb >= 0, est[np.maximum(nb, 0)], 0.0).sum(1)
        rng = np.random.default_rng(seed)
        use = masked[cells] if self.has_code_head else np.zeros(cells.size, dtype=bool)
        if use.all():  # every cell goes through the head: one encoder pass (inside code_mixture) is enough
            res = {}
        else:
            res = self.encode(data, masked=masked, cells=cells, decode=True)
            res["probs_cell_sq"] = res["probs_cell"].astype(np.float64) ** 2  # E[p^2] of one token: p^2
        if use.any():
            mix = self.code_mixture(data, masked, cells[use], top=max(top, _SAMPLE_TOP) if draw == "sample" else top,
                                    draw="sample" if draw == "sample" else "mean", rng=rng,
                                    context_codes=context_codes)
            keys = ("probs", "probs_cell", "probs_cell_sq", "tokens", "codes", "latent")
            if not res:
                res = {key: mix[key] for key in keys}
            else:
                for key in keys:
                    res[key][use] = mix[key]
        sq = res["probs_cell_sq"]
        theta_c, theta_n = self.dispersions()
        lib_c = est[cells]
        mean, mean_nbr = res["probs_cell"] * lib_c[:, None], res["probs"] * lib_nbr[:, None]
        pc = res["probs_cell"].astype(np.float64)
        # predictive variance of the cell's counts: NB noise of each token plus the spread between tokens
        var = lib_c[:, None] * pc + lib_c[:, None] ** 2 * ((1.0 / theta_c + 1.0) * sq - pc * pc)
        if draw == "sample":
            imputed, imputed_nbr = sample_nb(mean, theta_c, rng), sample_nb(mean_nbr, theta_n, rng)
        elif draw == "logmean":
            imputed = log_space_counts_from_moments(mean, var, lib_c)
            imputed_nbr = log_space_counts(mean_nbr, theta_n, lib_nbr)
        else:
            imputed, imputed_nbr = mean, mean_nbr
        return {"imputed": imputed, "imputed_nbr": imputed_nbr, "tokens": res["tokens"], "codes": res["codes"],
                "latent": res["latent"], "cells": cells, "mean": mean, "var": np.maximum(var, 0.0),
                "probs_nbr": res["probs"], "library": lib_c, "library_nbr": lib_nbr}

    def dispersions(self) -> tuple[np.ndarray, np.ndarray]:
        """The learned gene-wise NB inverse dispersions ``(theta_cell, theta_nbr)``, float64 (g,) each."""
        m = self.module
        return (m.log_theta_cell.detach().cpu().exp().numpy().astype(np.float64),
                m.log_theta.detach().cpu().exp().numpy().astype(np.float64))

    @property
    def has_code_head(self) -> bool:
        """Whether the model has a trained masked-code head and the token support it draws from."""
        return self.module.code_head is not None and self.module.token_codes.shape[0] > 0

    def _neighbour_codes(self, data: PreparedSlide, masked: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """(n, H) codes of the unmasked neighbours of ``cells`` in ``data`` (encoded with ``masked`` masked); -1
        elsewhere."""
        nb = data.nbr[cells]
        obs = np.unique(nb[nb >= 0])
        obs = obs[~masked[obs]]
        out = np.full((data.n_cells, self.module.codebook.heads), -1, dtype=np.int64)
        if obs.size:
            out[obs] = self.encode(data, masked=masked, cells=obs)["codes"]
        return out

    @torch.no_grad()
    def code_mixture(self, data: PreparedSlide, masked: np.ndarray, cells: np.ndarray, *, top: int = 1,
                     draw: str = "mean", rng: np.random.Generator | None = None,
                     batch_size: int = 2048, context_codes: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Token distribution of masked ``cells`` from the masked-code head, decoded.

        The head gives, per codebook head, a distribution over the code the
        cell would get if observed. A token's score is the sum of its codes'
        log-probabilities over heads, restricted to the tokens training cells
        use (``module.token_codes``; combinations never seen are not
        proposed); the ``top`` best are renormalised (softmax of the scores
        divided by ``ModelConfig.token_temperature``).
        Each is decoded with the cell's covariates. A head built with
        ``ModelConfig.code_head_context`` also reads the codes of each cell's
        unmasked neighbours in ``data``: ``context_codes`` (n, H) gives every
        row's observed codes (-1: unknown); by default they are computed here,
        each neighbour encoded with ``masked`` cells masked.

        Returns
        -------
        dict with ``probs``/``probs_cell`` (m, g) gene proportions (the
        mixture mean for ``draw="mean"``, the drawn token's profile for
        ``"sample"``), ``tokens`` (m,) and ``codes`` (m, H) (the most likely
        or the drawn token), ``weights`` (m, top) and ``candidates`` (m, top)
        token ids, ``probs_cell_sq`` (m, g) the mixture's mean of squared
        cell proportions (for the predictive variance) and ``latent`` (m, d).
        """
        self.module.eval()
        m = self.module
        rng = rng or np.random.default_rng(0)
        table = m.token_codes
        n_heads = table.shape[1]
        k = min(int(top), table.shape[0])
        ctx_codes = None
        if m.cfg.code_head_context:
            ctx_codes = (self._neighbour_codes(data, masked, cells) if context_codes is None
                         else np.asarray(context_codes, dtype=np.int64))
        out = {key: [] for key in ("probs", "probs_cell", "probs_cell_sq", "tokens", "codes", "weights", "candidates",
                                   "latent")}
        for idx in chunks(cells.size, batch_size):
            b = make_batch(data, cells[idx], masked=masked, targets=False).to(self.device)
            h, c = m.encode(b)
            out["latent"].append(h.float().cpu())
            ctx = None
            if ctx_codes is not None:
                ctx = torch.as_tensor(code_shares(data.nbr[cells[idx]], ctx_codes, ~masked, m.codebook.codebook_size),
                                      device=self.device)
            logp = torch.log_softmax(m.code_logits(h, ctx).float(), dim=-1)  # (B, H, K)
            score = sum(logp[:, j, table[:, j]] for j in range(n_heads))  # (B, T)
            val, pick = score.topk(k, dim=1)
            w = torch.softmax(val / m.cfg.token_temperature, dim=1)  # (B, k)
            codes = table[pick]  # (B, k, H)
            z = m.codebook.lookup(codes.reshape(-1, n_heads))
            cc = None if c is None else c.repeat_interleave(k, dim=0)
            pn, pc = (p.float().reshape(h.shape[0], k, -1) for p in m.both_probs(z, cc))
            out["probs_cell_sq"].append((w[..., None] * pc.double() ** 2).sum(1).cpu())
            if draw == "mean":
                j = w.argmax(1)
                pn, pc = (w[..., None] * pn).sum(1), (w[..., None] * pc).sum(1)
            else:
                u = torch.from_numpy(rng.random(h.shape[0])).to(w)
                j = torch.searchsorted(w.cumsum(1), u[:, None]).squeeze(1).clamp(max=k - 1)
                rows = torch.arange(h.shape[0], device=w.device)
                pn, pc = pn[rows, j], pc[rows, j]
            chosen = codes[torch.arange(h.shape[0], device=w.device), j]
            for key, val_ in (("probs", pn), ("probs_cell", pc), ("codes", chosen),
                              ("tokens", m.codebook.tokens(chosen)), ("weights", w),
                              ("candidates", m.codebook.tokens(codes.reshape(-1, n_heads)).reshape(-1, k))):
                out[key].append(val_.cpu())
        return {key: torch.cat(v).numpy() for key, v in out.items()}

    def tokens(self, adata: AnnData, *, key_added: str = K.TOKEN_KEY, copy: bool = False,
               align: bool = False, callback: Callable[[ProgressEvent], None] | None = None) -> AnnData | None:
        """Assign every cell a token.

        Writes ``obs[key_added]`` (categorical token ids), ``obsm['squint_latent']``,
        ``obsm['squint_codes']`` (per head) and the parameters in
        ``uns['squint']['tokens']``. Returns the AnnData when ``copy=True``.
        """
        data = self.prepare(adata, align=align)
        res = self.encode(data, callback=callback)
        target = adata.copy() if copy else adata
        vocab = np.arange(self.module.codebook.vocabulary_size)
        target.obs[key_added] = pd.Categorical(res["tokens"], categories=vocab[np.isin(vocab, res["tokens"])])
        target.obsm[K.LATENT_KEY] = res["latent"]
        target.obsm[K.CODES_KEY] = res["codes"]
        target.uns.setdefault(K.UNS_KEY, {})["tokens"] = {
            "params": {"key_added": key_added, "vocabulary_size": int(vocab.size),
                       "heads": self.config.model.heads, "codebook_size": self.config.model.codebook_size},
            "n_tokens_used": int(np.unique(res["tokens"]).size),
        }
        return target if copy else None

    @torch.no_grad()
    def reconstruction_report(self, data: PreparedSlide | None = None, *, max_cells: int = 20000, seed: int = 0) -> dict:
        """NB negative log-likelihood and deviance of X_nbr: the model versus a mean-profile baseline.

        The baseline predicts every microenvironment as the global mean gene
        proportions times its read depth, with its own gene-wise dispersion
        fitted by maximum likelihood, so the comparison is fair to it. The Poisson
        deviance (a floor shared by both predictions, unlike NB deviances with
        different dispersions) gives ``deviance_explained = 1 - model / baseline``,
        the count analogue of R^2.
        """
        data = data or self.data
        rng = np.random.default_rng(seed)
        cells = np.sort(rng.choice(data.n_cells, size=min(max_cells, data.n_cells), replace=False))
        res = self.encode(data, cells=cells, decode=True)
        x = torch.from_numpy(data.x_nbr[cells].toarray())
        lib = x.sum(1, keepdim=True)
        theta = self.module.log_theta.detach().cpu().exp()
        model_nll = -nb_log_likelihood(x, torch.from_numpy(res["probs"]) * lib, theta).mean()
        p0 = (x.sum(0) / x.sum()).clamp(min=1e-8)
        mu0 = p0[None, :] * lib
        log_t = torch.zeros(x.shape[1], requires_grad=True)
        opt = torch.optim.Adam([log_t], lr=0.1)
        with torch.enable_grad():
            for _ in range(150):
                opt.zero_grad()
                loss = -nb_log_likelihood(x, mu0, log_t.exp()).mean()
                loss.backward()
                opt.step()
        theta0 = log_t.detach().exp()
        base_nll = -nb_log_likelihood(x, mu0, theta0).mean()
        mu_model = torch.from_numpy(res["probs"]) * lib
        dev_model, dev_base = poisson_deviance(x, mu_model), poisson_deviance(x, mu0)
        return {"model_nb_nll": float(model_nll), "mean_profile_nb_nll": float(base_nll),
                "ratio": float(model_nll / base_nll), "model_deviance": dev_model, "mean_profile_deviance": dev_base,
                "deviance_explained": 1.0 - dev_model / dev_base, "n_cells": int(cells.size)}

    def codebook_stats(self, tokens: np.ndarray | None = None) -> dict:
        """Utilisation (fraction of codes used per head) and perplexity over a slide's assignments."""
        if tokens is None:
            tokens = self.encode(self.data)["tokens"]
        codes = self.module.codebook.codes_from_tokens(torch.as_tensor(tokens)).numpy()
        kk = self.config.model.codebook_size
        util, perp = [], []
        for h in range(codes.shape[1]):
            p = np.bincount(codes[:, h], minlength=kk) / codes.shape[0]
            util.append(float((p > 0).mean()))
            nz = p[p > 0]
            perp.append(float(np.exp(-(nz * np.log(nz)).sum())))
        return {"utilisation": float(np.mean(util)), "perplexity": float(np.mean(perp)),
                "tokens_used": int(np.unique(tokens).size), "per_head_utilisation": util}

    def summary(self) -> str:
        """One line for users: genes, sections and the codebook."""
        m = self.config.model
        return (f"{self.label}: {len(self.genes)} genes, {len(self.sections)} sections, "
                f"codebook {m.codebook_size}×{m.heads} heads")

    def __repr__(self) -> str:
        m = self.config.model
        return (f"Squint(genes={len(self.genes)}, sections={len(self.sections)}, codebook={m.codebook_size}x{m.heads} heads, "
                f"latent={m.latent}, covariates={m.use_covariates}, device={self.device})")

