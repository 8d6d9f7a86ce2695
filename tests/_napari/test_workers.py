"""The dock's progress text: epoch, loss and time left from the engine's events (plain Python)."""

from __future__ import annotations

from napari_squint._napari.workers import Job, ProgressTracker, format_seconds
from napari_squint.train.events import ProgressEvent


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_format_seconds():
    assert format_seconds(4.44) == "4.4 s"
    assert format_seconds(42.2) == "42 s"
    assert format_seconds(65) == "1 min 05 s"
    assert format_seconds(3720) == "1 h 02 min"


def test_tracker_counts_steps_over_every_epoch_with_loss_and_time_left():
    clock = Clock()
    tr = ProgressTracker("training SQuINT", clock=clock)
    assert tr.update(ProgressEvent("kmeans", message="k-means initialisation of the codebook")) == (
        0, 0, "k-means initialisation of the codebook")  # busy, no count yet
    clock.t = 30.0  # setup time must not count towards the rate
    v, m, text = tr.update(ProgressEvent("step", step=1, total=10, epoch=1, n_epochs=3, metrics={"loss": 2.5}))
    assert (v, m) == (1, 30) and text.startswith("epoch 1/3 · loss 2.500")
    clock.t = 32.0  # 2 s per step from here on
    v, m, text = tr.update(ProgressEvent("step", step=2, total=10, epoch=1, n_epochs=3, metrics={"loss": 2.4}))
    assert v == 2 and "56 s left" in text
    clock.t = 50.0
    v, m, text = tr.update(ProgressEvent("epoch", epoch=1, n_epochs=3, metrics={"loss": 2.0}))
    assert v == 10 and "epoch 1/3 · loss 2.000" in text
    v, _, text = tr.update(ProgressEvent("step", step=1, total=10, epoch=2, n_epochs=3, metrics={"loss": 1.9}))
    assert v == 11 and "loss 2.000" in text  # the epoch's mean loss until the next epoch ends


def test_tracker_shows_validation_and_completes_when_validation_ends_training():
    clock = Clock()
    tr = ProgressTracker("training CIFM", clock=clock)
    tr.update(ProgressEvent("step", step=1, total=50, epoch=1, n_epochs=60, metrics={"loss": 4.4}))
    clock.t = 10.0
    tr.update(ProgressEvent("step", step=2, total=50, epoch=1, n_epochs=60, metrics={"loss": 4.3}))
    v, m, text = tr.update(ProgressEvent("epoch", epoch=1, n_epochs=60,
                                         metrics={"loss": 4.2, "val_loss": 4.05, "best_epoch": 1, "stopped": False}))
    assert (v, m) == (50, 3000) and "validation 4.050 (best epoch 1)" in text
    assert "at most" in text  # the epochs are a cap when validation chooses the length
    v, m, text = tr.update(ProgressEvent("epoch", epoch=12, n_epochs=60,
                                         metrics={"loss": 3.9, "val_loss": 3.99, "best_epoch": 3, "stopped": True}))
    assert v == m == 3000 and text == "epoch 12: validation loss no longer improving, training ends (best epoch 3)"


def test_job_elapsed_is_known_when_done_runs(monkeypatch):
    import time

    monkeypatch.setenv("NAPARI_SQUINT_SYNC", "1")
    seen = []

    def work():
        yield ProgressEvent("step", step=1, total=1, epoch=1, n_epochs=1)
        time.sleep(0.05)
        return 7

    job = Job(work, desc="x", on_done=lambda r: seen.append((r, job.elapsed())))
    job.start()
    assert seen[0][0] == 7 and seen[0][1] >= 0.05  # the "trained N epochs in 0.0 s" bug
    assert job.seconds >= seen[0][1]
