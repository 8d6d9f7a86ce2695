"""How many CPU threads training uses: a policy that does not oversubscribe the cores.

Training on CPU runs torch's intra-op threads (OpenMP/MKL), optionally a thread that assembles the next
mini-batches, and shares the cores with whatever else runs: a napari GUI thread, a browser, another job. An
OpenMP parallel region is as slow as its slowest thread, so one intra-op thread that has to share its core with a
busy process stalls every operation: with torch's default (one thread per core) training beside one busy
single-threaded process took 2.9x its quiet time on a 2-core machine (issue 14).

The policy:

* **usable cores**: the CPUs this process may run on (``os.sched_getaffinity``), capped by a cgroup CPU quota
  (``/sys/fs/cgroup/cpu.max``) when there is one;
* **other load**: how many threads of *other* processes want a CPU, sampled from the kernel's run queue
  (``/proc/loadavg``'s running count minus this process's own running threads, scaled by the share of the
  machine's CPUs this process may use), averaged over the samples;
* **intra-op threads** = usable cores - other load (rounded) - ``reserve`` (cores kept for this process's
  other threads, e.g. a GUI), at least 1; inter-op threads 1 (training has no parallel branches to run);
* **prefetch thread** only when a core is left over for it after the intra-op threads, or on a GPU (whose CPU
  cores are otherwise idle while it computes). Batch assembly is a few tensor gathers per step
  (:mod:`napari_squint.data.batch`), so assembling inline costs little, while a third thread on two cores
  preempts an intra-op thread at every step;
* re-planned at every epoch from the load sampled during the previous one, so a job that starts or stops
  beside a long training run is followed.

The setting, in order of precedence: an explicit number (``TrainConfig.num_threads``, ``Squint(...,
num_threads=N)``), the ``NAPARI_SQUINT_THREADS`` environment variable (a number, or ``auto``), then ``auto``
(capped by ``OMP_NUM_THREADS`` when that is set).
A fixed number disables the adaptation (and the prefetch thread, unless a core is left for it).

Entry points use :func:`training_threads`; the training loop opens one itself when none is active on the
calling thread, so the CLI, the Python API, ``torchrun`` ranks and napari's worker thread all follow it::

    with training_threads(reserve=0) as policy:   # napari's worker: inside the worker thread
        model.train()
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

__all__ = ["ENV_VAR", "LoadMonitor", "ThreadPlan", "ThreadPolicy", "active_policy", "other_load", "plan_threads",
           "policy_scope",
           "resolve_setting", "training_threads", "usable_cores"]

#: environment variable: a number of intra-op threads, or "auto"
ENV_VAR = "NAPARI_SQUINT_THREADS"

_local = threading.local()


def usable_cores() -> int:
    """CPUs this process may use: its affinity set, capped by a cgroup v2/v1 CPU quota when one is set."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, int(quota + 0.5)))
    return max(1, n)


def _cgroup_quota() -> float | None:
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:  # cgroup v2: "max 100000" or "200000 100000"
            q, p = f.read().split()[:2]
        return None if q == "max" else int(q) / int(p)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            q = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            p = int(f.read())
        return None if q <= 0 else q / p
    except (OSError, ValueError):
        return None


def _own_running() -> int:
    """Threads of this process that are runnable now (state R)."""
    n = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2:].startswith("R"):
                n += 1
    except OSError:
        return 1
    return max(n, 1)


def _system_running() -> int | None:
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def other_load() -> float:
    """One sample of how many threads of other processes compete for this process's cores (0 where /proc is
    unavailable): runnable threads of other processes, scaled by the share of the machine's CPUs this process may
    use (``/proc/loadavg`` counts the whole machine; in a container pinned to 2 of 64 CPUs, 40 runnable threads
    elsewhere are about 1 here)."""
    total = _system_running()
    if total is None:
        return 0.0
    share = min(1.0, usable_cores() / max(1, os.cpu_count() or 1))
    return float(max(0, total - _own_running())) * share


class LoadMonitor:
    """Average :func:`other_load` over samples taken while training runs (one per step is cheap: a few small
    /proc reads)."""

    def __init__(self):
        self.total, self.n = 0.0, 0

    def sample(self) -> None:
        self.total += other_load()
        self.n += 1

    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def reset(self) -> None:
        self.total, self.n = 0.0, 0


@dataclass(frozen=True)
class ThreadPlan:
    intra_op: int  #: torch.set_num_threads
    inter_op: int  #: torch inter-op pool (1; set once per process when possible)
    prefetch: bool  #: assemble batches in a background thread
    cores: int  #: usable cores
    other_load: float  #: runnable threads of other processes (sampled)
    reserve: float  #: cores kept for this process's other threads
    source: str  #: "setting", "env" or "auto"

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_setting(setting: int | str | None = None) -> tuple[int | None, str]:
    """(fixed threads or None for auto, where the setting came from)."""
    if setting not in (None, "auto", ""):
        n = int(setting)
        if n < 1:
            raise ValueError(f"num_threads={setting!r}: expected a positive number of threads or 'auto'")
        return n, "setting"
    if setting is None:
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env and env != "auto":
            try:
                n = int(env)
            except ValueError:
                raise ValueError(f"{ENV_VAR}={env!r}: expected a positive number of threads or 'auto'") from None
            if n < 1:
                raise ValueError(f"{ENV_VAR}={env!r}: expected a positive number of threads or 'auto'")
            return n, "env"
        if env == "auto":
            return None, "env"
    return None, "auto"


def plan_threads(setting: int | str | None = None, *, reserve: float = 0.0, load: float | None = None,
                 samples: int = 5, device: str | torch.device = "cpu", prefetch: bool = True) -> ThreadPlan:
    """The thread plan for a training run.

    Parameters
    ----------
    setting
        A number of intra-op threads, ``"auto"``, or ``None`` (the environment variable, else auto).
    reserve
        Cores kept free for this process's other threads (a GUI thread that redraws while training).
    load
        Runnable threads of other processes; sampled now (``samples`` reads, 10 ms apart) when None.
    device
        On a GPU the prefetch thread is always used when ``prefetch``.
    prefetch
        Whether the caller wants a prefetch thread at all (``TrainConfig.prefetch > 0``).
    """
    fixed, source = resolve_setting(setting)
    cores = usable_cores()
    if load is None:
        import time

        vals = []
        for i in range(max(1, samples)):
            vals.append(other_load())
            if i + 1 < samples:
                time.sleep(0.01)
        load = sum(vals) / len(vals)
    free = cores - int(round(load)) - reserve
    intra = fixed if fixed is not None else max(1, int(free))
    cap = _omp_cap()
    if fixed is None and cap is not None:  # OMP_NUM_THREADS, when set, caps the automatic choice
        intra = min(intra, cap)
    on_gpu = torch.device(device).type == "cuda"
    use_prefetch = bool(prefetch) and (on_gpu or free - intra >= 1)
    return ThreadPlan(intra_op=int(intra), inter_op=1, prefetch=use_prefetch, cores=cores, other_load=float(load),
                      reserve=float(reserve), source=source)


def _omp_cap() -> int | None:
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return n if n >= 1 else None


class ThreadPolicy:
    """The plan in force on this thread, re-planned between epochs from the load seen during the last one."""

    def __init__(self, setting=None, *, reserve: float = 0.0, device="cpu", prefetch: bool = True):
        self.setting, self.reserve, self.device, self.want_prefetch = setting, reserve, device, prefetch
        self.fixed, _ = resolve_setting(setting)
        self.monitor = LoadMonitor()
        self.plan = plan_threads(setting, reserve=reserve, device=device, prefetch=prefetch)
        self.history: list[dict] = []
        self._apply()

    def _apply(self) -> None:
        torch.set_num_threads(self.plan.intra_op)
        _set_interop_once(self.plan.inter_op)

    def sample(self) -> None:
        """Record the current load (call once per training step)."""
        self.monitor.sample()

    def replan(self) -> ThreadPlan:
        """Adapt the plan to the load sampled since the last call (no change for a fixed setting)."""
        load = self.monitor.mean()
        self.monitor.reset()
        if self.fixed is None and load is not None:
            new = plan_threads(self.setting, reserve=self.reserve, load=load, device=self.device,
                               prefetch=self.want_prefetch)
            if new != self.plan:
                self.plan = new
                self._apply()
        return self.plan

    def describe(self) -> dict:
        """The plan plus the settings behind it (recorded in the training history and benchmark JSON)."""
        return {**self.plan.as_dict(), "torch_threads": torch.get_num_threads(),
                "env": os.environ.get(ENV_VAR), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def _set_interop_once(n: int) -> None:
    # torch allows this once per process, before any inter-op work; later calls raise
    if getattr(_set_interop_once, "done", False):
        return
    _set_interop_once.done = True
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass


def active_policy() -> ThreadPolicy | None:
    """The policy of the innermost :func:`training_threads` on the calling thread, if any."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def policy_scope(setting: int | str | None = None, *, device="cpu", prefetch: bool = True):
    """A context manager that keeps the caller's active policy (napari's worker, a benchmark) when there is one,
    else opens :func:`training_threads` with these settings (what the training loop and the models use)."""
    from contextlib import nullcontext

    active = active_policy()
    return nullcontext(active) if active is not None else training_threads(setting, device=device, prefetch=prefetch)


@contextmanager
def training_threads(setting: int | str | None = None, *, reserve: float = 0.0, device="cpu",
                     prefetch: bool = True):
    """Apply the thread policy on the calling thread for the duration of the block; restore torch's thread
    count afterwards. Yields the :class:`ThreadPolicy` (``policy.plan`` is the current :class:`ThreadPlan`).

    Use it in the thread that trains: torch's thread count is per calling thread for OpenMP.
    """
    before = torch.get_num_threads()
    policy = ThreadPolicy(setting, reserve=reserve, device=device, prefetch=prefetch)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(policy)
    try:
        yield policy
    finally:
        stack.remove(policy)
        torch.set_num_threads(before)
