"""The SQuINT training loop, written as a generator of progress events.

The loop only touches a model through ``module(batch)`` and the optimiser, so
wrapping the module in DistributedDataParallel and sharding ``cells`` across
ranks is all that distributed training changes (see ``train/distributed.py``).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from napari_squint.data.batch import EpochBatches, SlideTensors, chunks, epoch_batches, make_batch, plan_epoch
from napari_squint.data.prepare import PreparedSlide
from napari_squint.config import TrainConfig
from napari_squint.train.events import ProgressEvent
from napari_squint.train.prefetch import prefetch
from napari_squint.train.threads import policy_scope


def mask_fraction(epoch: int, n_epochs: int, start: float, end: float) -> float:
    """Masked fraction annealed linearly from ``start`` (first epoch) to ``end`` (last)."""
    if n_epochs <= 1:
        return end
    return start + (end - start) * epoch / (n_epochs - 1)


def moment_theta(X, props: np.ndarray, seed: int = 0, max_cells: int = 20000) -> np.ndarray:
    """Gene-wise NB inverse dispersion by the method of moments under a mean-profile model.

    With mu = props * library, Var(x) = mu + mu^2 / theta gives
    theta = sum(mu^2) / sum((x - mu)^2 - mu), clipped to [0.1, 1e4].
    Uses a seeded sample of at most ``max_cells`` rows (sparse rows densified in a small block).
    """
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    rows = np.sort(rng.choice(n, size=min(n, max_cells), replace=False))
    x = X[rows].toarray().astype(np.float64)
    mu = x.sum(1, keepdims=True) * props[None, :]
    excess = ((x - mu) ** 2 - mu).sum(0)
    theta = (mu**2).sum(0) / np.maximum(excess, 1e-8)
    return np.clip(theta, 0.1, 1e4)


def _common_steps(n: int, device) -> int:
    """Number of steps every data-parallel rank can take this epoch (the minimum over ranks)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return n
    t = torch.tensor([n], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _core(module):
    return module.module if hasattr(module, "module") else module


@torch.no_grad()
def calibrate_centre(module, data: PreparedSlide, cells: np.ndarray, cfg: TrainConfig, device, *, batch_size=8192):
    """Set the latent centring statistics from the final model on a cell sample (unmasked)."""
    core = _core(module)
    rng = np.random.default_rng(cfg.seed + 2)
    sample = rng.choice(cells, size=min(cfg.kmeans_cells, cells.size), replace=False)
    was = core.training
    core.eval()
    lat = [core.encode(make_batch(data, sample[idx], targets=False).to(device), raw=True)[0]
           for idx in chunks(sample.size, batch_size)]
    core.centre.calibrate(torch.cat(lat))
    core.train(was)


@torch.no_grad()
def init_codebook(module, data: PreparedSlide, cells: np.ndarray, cfg: TrainConfig, device, *, batch_size=8192):
    """k-means initialisation of the codebook on unmasked latents of a cell sample."""
    core = _core(module)
    rng = np.random.default_rng(cfg.seed + 1)
    sample = rng.choice(cells, size=min(cfg.kmeans_cells, cells.size), replace=False)
    was = core.training
    core.eval()
    raw = torch.cat([core.encode(make_batch(data, sample[idx], targets=False).to(device), raw=True)[0]
                     for idx in chunks(sample.size, batch_size)])
    core.centre.calibrate(raw)
    core.codebook.init_kmeans(core.centre(raw), seed=cfg.seed)
    core.train(was)


def make_optimizer(core, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SQuINT's AdamW: the NB dispersions get ``theta_lr_scale`` times the learning rate and no weight decay
    (they otherwise lag behind the decoder)."""
    disp = [p for n, p in core.named_parameters() if n.startswith("log_theta")]
    rest = [p for n, p in core.named_parameters() if not n.startswith("log_theta")]
    groups = [{"params": rest}, {"params": disp, "lr": cfg.theta_lr_scale * cfg.lr, "weight_decay": 0.0}]
    try:  # the fused kernel: one pass over all parameters instead of ~10 small ops each (5 ms -> 1 ms a step on CPU)
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or build without it
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def iter_train(module, data: PreparedSlide, cells: np.ndarray, cfg: TrainConfig, device: torch.device,
               *, optimizer: torch.optim.Optimizer | None = None, start_epoch: int = 0,
               history: list | None = None):
    """Train ``module`` on the seed ``cells`` of ``data``; yield :class:`ProgressEvent`.

    Returns (as the generator's value) the per-epoch history: a list of dicts
    with mean losses, codebook utilisation/perplexity over the epoch, seconds
    and cells per second. Records are also appended to ``history`` as each
    epoch ends, so a cancelled run keeps the epochs it finished.
    """
    core = _core(module)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    cells = np.asarray(cells, dtype=np.int64)
    if optimizer is None:
        optimizer = make_optimizer(core, cfg)
    if not bool(core.codebook.initted):
        yield ProgressEvent("kmeans", message="k-means initialisation of the codebook")
        init_codebook(module, data, cells, cfg, device)
        tot = np.asarray(data.x_nbr.sum(0)).ravel()  # all cells: identical on every rank
        props = tot / max(tot.sum(), 1.0)
        if cfg.theta_init == "moments":
            core.init_from_data(torch.from_numpy(props).float().to(device),
                                torch.from_numpy(moment_theta(data.x_nbr, props, cfg.seed)).float().to(device),
                                torch.from_numpy(moment_theta(data.counts, props, cfg.seed)).float().to(device))
        elif cfg.theta_init == "constant":
            core.init_from_data(torch.from_numpy(props).float().to(device))
        else:
            raise ValueError(f"theta_init={cfg.theta_init!r}: expected 'moments' or 'constant'")
    history = [] if history is None else history
    # the thread policy of the caller (napari's worker, a model's train(), a benchmark) or the configured one
    with policy_scope(cfg.num_threads, device=device, prefetch=cfg.prefetch > 0) as policy:
        yield from _epochs(module, core, data, cells, cfg, device, optimizer, rng, gen, policy, start_epoch, history)
    return history


_LOSS_KEYS = ("nb_loss", "nb_cell_loss", "adj_loss", "code_loss", "commit_loss", "perplexity")


def _epochs(module, core, data, cells, cfg, device, optimizer, rng, gen, policy, start_epoch, history):
    use_amp = bool(cfg.amp) and device.type == "cuda"
    heads, vocab = core.codebook.heads, core.codebook.codebook_size
    tensors = SlideTensors(data, device)  # dense inputs and targets, once per training run
    for epoch in range(start_epoch, cfg.epochs):
        plan = policy.replan() if epoch > start_epoch else policy.plan  # follows the load of the last epoch
        module.train()
        t0 = time.perf_counter()
        frac = mask_fraction(epoch, cfg.epochs, cfg.mask_start, cfg.mask_end)
        masked = rng.random(data.n_cells) < frac
        usage = torch.zeros(heads, vocab, device=device)
        batches = list(epoch_batches(data, cells, cfg.batch_size, rng))
        batches = batches[:_common_steps(len(batches), device)]
        # per-batch random draws are made here, in order, so results do not depend on thread timing
        batch_ids, neg_seeds = [], []
        for seeds in batches:
            bid = data.batch[seeds].copy()
            if cfg.batch_unknown_p > 0:
                bid[rng.random(seeds.size) < cfg.batch_unknown_p] = core.n_batches
            batch_ids.append(bid)
            neg_seeds.append(int(rng.integers(2**31)))
        # every batch's halo, edges and seed pairs at once; a step only gathers rows
        epoch_plan = EpochBatches(plan_epoch(data, batches, masked=masked, batch_ids=batch_ids, neg_seeds=neg_seeds),
                                  tensors)
        steps = range(len(epoch_plan))
        source = (prefetch(steps, epoch_plan.__getitem__, depth=cfg.prefetch) if plan.prefetch and cfg.prefetch > 0
                  else map(epoch_plan.__getitem__, steps))
        keys = None
        acc = None
        n_steps = 0
        for step, batch in enumerate(source):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = module(batch, noise=cfg.mask_noise, masked_weight=cfg.masked_weight)
            vq = out["code_loss"] + out["commit_loss"]
            loss = cfg.lambda_x * out["nb_loss"] + cfg.lambda_e * vq + cfg.lambda_m * out["mask_norm"]
            if "nb_cell_loss" in out:
                loss = loss + cfg.lambda_cell * out["nb_cell_loss"]
            if "adj_loss" in out:
                loss = loss + cfg.lambda_a * out["adj_loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0, foreach=True)
            optimizer.step()
            if step % 2 == 1:
                core.codebook.reseed_dead(core.codebook.split(out["latent"].detach()), generator=gen)
            codes = out["codes"].detach().t()
            usage.scatter_add_(1, codes, torch.ones(codes.shape, device=usage.device))
            if keys is None:
                keys = [k for k in _LOSS_KEYS if k in out]
            # the epoch's sums stay on the device (float64); one value per step leaves it, for the progress bar
            vals = torch.stack([out[k].detach().float() for k in keys] + [loss.detach().float()]).double()
            acc = vals if acc is None else acc + vals
            n_steps += 1
            if step % 4 == 0:  # a few /proc reads; every 4th step is plenty to follow the load
                policy.sample()
            yield ProgressEvent("step", step=step + 1, total=len(epoch_plan), epoch=epoch + 1, n_epochs=cfg.epochs,
                                metrics={"loss": float(vals[-1])})
        dt = time.perf_counter() - t0
        usage = usage.cpu()
        p = usage / usage.sum(1, keepdim=True).clamp(min=1)
        ent = -(p * torch.log(p + 1e-10)).sum(1)
        sums = dict(zip([*keys, "loss"], acc.cpu().tolist())) if acc is not None else {}
        rec = {k: v / max(n_steps, 1) for k, v in sums.items()}
        rec.update(epoch=epoch + 1, mask_fraction=frac, seconds=dt, cells_per_s=cells.size / dt,
                   utilisation=float((usage > 0).float().mean()), epoch_perplexity=float(ent.exp().mean()),
                   codebook_size=vocab, threads=plan.intra_op, prefetch_thread=plan.prefetch)
        if epoch == cfg.epochs - 1:
            calibrate_centre(module, data, cells, cfg, device)
        history.append(rec)
        yield ProgressEvent("epoch", epoch=epoch + 1, n_epochs=cfg.epochs, step=epoch + 1, total=cfg.epochs,
                            metrics=rec)
