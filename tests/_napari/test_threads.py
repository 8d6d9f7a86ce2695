"""Real worker threads: training off the GUI thread keeps the event loop running, and cancel works."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_squint import _constants as K


@pytest.fixture
def threaded(monkeypatch):
    monkeypatch.setenv("NAPARI_SQUINT_SYNC", "0")


def _tick_timer(ticks: list) -> QTimer:
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    return timer


def test_training_on_a_thread_keeps_the_event_loop_running(threaded, slide_widget, qtbot, tiny, tiny_model):
    # the engine is imported already (tiny_model): the first import of torch's C extension holds the GIL
    # for about a second wherever it happens, once per process; this test measures training itself
    import scanpy  # noqa: F401

    w = slide_widget
    w.epochs_spin.setValue(3)
    shown = []
    show = w._show_progress
    w._show_progress = lambda *a: shown.append(a) or show(*a)
    ticks: list[float] = []
    timer = _tick_timer(ticks)
    t0 = time.perf_counter()
    job = w.train(**{k: v for k, v in tiny.items() if k != "epochs"})
    assert job.worker is not None, "the job did not start a worker thread"
    assert not w.train_button.isEnabled() and w.cancel_button.isEnabled()
    # wait on the job's own state, not on the worker's signal: a short job may finish before a signal blocker connects
    qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    elapsed = time.perf_counter() - t0
    timer.stop()
    assert w.last_error is None, w.last_error
    assert w.session.model is not None and len(w.session.model.history) == 3
    assert K.TOKEN_KEY in w.session.adata.obs
    # the GUI thread kept processing timer events while the worker trained
    gaps = np.diff([t0, *ticks])
    assert len(ticks) >= 0.25 * elapsed / 0.02, (len(ticks), elapsed)
    assert gaps.max() < 0.5, f"the event loop stalled for {gaps.max():.2f} s"
    assert w.train_button.isEnabled() and not w.cancel_button.isEnabled()
    # progress was shown in the dock itself (epoch, loss), and is gone now; the timing is the job's
    assert any(text.startswith("epoch 3/3 · loss") for _, _, text in shown), shown[-3:]
    assert any(m > 0 and v == m for v, m, _ in shown)
    assert w.progress.isHidden() and w.progress_label.isHidden()
    assert w.status.text().startswith("trained 3 epochs in ") and " in 0.0 s" not in w.status.text()


def test_no_row_is_left_in_napari_activity_panel(threaded, slide_widget, qtbot, tiny):
    from napari.utils import progress

    w = slide_widget
    w.epochs_spin.setValue(1)
    job = w.train(**{k: v for k, v in tiny.items() if k != "epochs"})
    qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    assert w.last_error is None, w.last_error
    assert not [p for p in progress._all_instances if "SQuINT" in str(getattr(p, "desc", ""))]


def test_cancel_stops_training_and_keeps_the_previous_state(threaded, slide_widget, qtbot, tiny):
    w = slide_widget
    w.epochs_spin.setValue(500)
    job = w.train(**{k: v for k, v in tiny.items() if k != "epochs"})
    events = []
    job.worker.yielded.connect(events.append)
    qtbot.waitUntil(lambda: any(getattr(e, "stage", "") == "step" for e in events), timeout=60_000)
    w.cancel_button.click()
    qtbot.waitUntil(lambda: not job.running, timeout=30_000)
    assert job.cancelled
    assert w.session.model is None and K.TOKEN_KEY not in w.session.adata.obs
    assert w.status.text() == "training SQuINT: cancelled"  # a message, nothing else
    assert w.progress.isHidden() and w.progress_label.isHidden()
    assert w.train_button.isEnabled()


def test_errors_on_a_thread_reach_the_widget(threaded, slide_widget, qtbot):
    w = slide_widget
    w.genes_edit.setText("NotAGene")
    job = w.train(epochs=1, device="cpu")
    assert job.worker is not None, "the job did not start a worker thread"
    # the error is raised within milliseconds, possibly before any signal blocker could connect: poll the job
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    assert w.last_error is not None
    assert "NotAGene" in str(w.last_error)
    assert w.session.model is None
