"""The CPU thread policy (train/threads.py)."""

import pytest
import torch

from napari_squint.train import threads as T


def test_setting_precedence(monkeypatch):
    monkeypatch.delenv(T.ENV_VAR, raising=False)
    assert T.resolve_setting(None) == (None, "auto")
    assert T.resolve_setting(3) == (3, "setting")
    monkeypatch.setenv(T.ENV_VAR, "2")
    assert T.resolve_setting(None) == (2, "env")
    assert T.resolve_setting(1) == (1, "setting")  # an explicit option wins over the environment
    assert T.resolve_setting("auto") == (None, "auto")
    monkeypatch.setenv(T.ENV_VAR, "auto")
    assert T.resolve_setting(None) == (None, "env")
    monkeypatch.setenv(T.ENV_VAR, "many")
    with pytest.raises(ValueError, match=T.ENV_VAR):
        T.resolve_setting(None)
    with pytest.raises(ValueError, match="num_threads=0"):
        T.resolve_setting(0)


def test_auto_plan_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.delenv(T.ENV_VAR, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(T, "usable_cores", lambda: 4)
    quiet = T.plan_threads(load=0.0)
    assert (quiet.intra_op, quiet.prefetch) == (4, False)  # every core computes; no spare core for a 5th thread
    busy = T.plan_threads(load=1.0)
    assert busy.intra_op == 3
    gui = T.plan_threads(load=1.0, reserve=1)
    assert gui.intra_op == 2
    assert T.plan_threads(load=9.0).intra_op == 1  # never below one
    fixed = T.plan_threads(2, load=0.0)
    assert (fixed.intra_op, fixed.prefetch, fixed.source) == (2, True, "setting")  # two cores left for prefetch
    assert T.plan_threads(load=0.0, device="cuda").prefetch  # the GPU computes: a CPU thread assembles
    assert not T.plan_threads(load=0.0, device="cuda", prefetch=False).prefetch


def test_context_applies_restores_and_adapts(monkeypatch):
    monkeypatch.delenv(T.ENV_VAR, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(T, "usable_cores", lambda: 2)
    monkeypatch.setattr(T, "other_load", lambda: 0.0)
    before = torch.get_num_threads()
    with T.training_threads() as policy:
        assert T.active_policy() is policy
        assert torch.get_num_threads() == policy.plan.intra_op == 2
        policy.monitor.total, policy.monitor.n = 3.0, 3  # one busy process seen during the last epoch
        assert policy.replan().intra_op == 1
        assert torch.get_num_threads() == 1
        assert policy.describe()["cores"] == 2
    assert T.active_policy() is None
    assert torch.get_num_threads() == before


def test_omp_num_threads_caps_the_automatic_choice(monkeypatch):
    monkeypatch.delenv(T.ENV_VAR, raising=False)
    monkeypatch.setattr(T, "usable_cores", lambda: 4)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert T.plan_threads(load=0.0).intra_op == 1
    assert T.plan_threads(3, load=0.0).intra_op == 3  # an explicit setting is not capped


def test_fixed_setting_does_not_adapt(monkeypatch):
    monkeypatch.setattr(T, "usable_cores", lambda: 2)
    with T.training_threads(2) as policy:
        policy.monitor.total, policy.monitor.n = 5.0, 1
        assert policy.replan().intra_op == 2


def test_loop_follows_the_callers_policy(tissue, monkeypatch):
    from napari_squint.api.squint import Squint

    monkeypatch.delenv(T.ENV_VAR, raising=False)

    m = Squint(tissue, epochs=1, batch_size=256, codebook_size=8, heads=2, latent=16, hidden=32, code_head_epochs=0)
    with T.training_threads(1, prefetch=False):  # the caller's choice, whatever the machine's load
        hist = m.train()
    assert hist[0]["threads"] == 1 and hist[0]["prefetch_thread"] is False


def test_other_load_is_a_count():
    assert T.other_load() >= 0
    assert T.usable_cores() >= 1


def test_other_load_scales_to_this_process_share_of_the_machine(monkeypatch):
    monkeypatch.setattr(T, "_system_running", lambda: 41)
    monkeypatch.setattr(T, "_own_running", lambda: 1)
    monkeypatch.setattr(T.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(T, "usable_cores", lambda: 2)
    assert T.other_load() == 40 * 2 / 64
    monkeypatch.setattr(T, "usable_cores", lambda: 64)
    assert T.other_load() == 40
