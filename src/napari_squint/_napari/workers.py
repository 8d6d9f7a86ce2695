"""Run engine work off the GUI thread, with progress and cancel.

The engine's long operations are generators of
:class:`~napari_squint.train.events.ProgressEvent` whose return value is the
result (``Squint.iter_train``); short ones are plain functions. :class:`Job`
drives either on a :func:`napari.qt.threading.create_worker` thread and calls
the widget back on the GUI thread; :class:`ProgressTracker` turns the events
into what the dock's own progress bar shows (epoch, loss, time left). Nothing
goes to napari's activity panel, so no row outlives a job. Cancel asks the
worker to stop at the next event.

Set ``NAPARI_SQUINT_SYNC=1`` to run every job synchronously on the calling
thread (tests; the callbacks are the same).
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from typing import Any

from napari_squint.train.events import ProgressEvent

#: environment switch: run jobs on the calling thread
SYNC_ENV = "NAPARI_SQUINT_SYNC"


def sync_mode() -> bool:
    return os.environ.get(SYNC_ENV, "").strip().lower() not in ("", "0", "false", "no")


class Job:
    """One piece of engine work, run on a thread (or synchronously), with progress.

    Parameters
    ----------
    fn
        Callable returning a generator of ProgressEvent (its return value is
        the result) or the result itself. Called on the worker thread.
    desc
        Progress bar description.
    on_event
        ``on_event(ProgressEvent)`` on the GUI thread for every event.
    on_done
        ``on_done(result)`` when ``fn`` finishes.
    on_error
        ``on_error(exception)`` when it raises.
    on_cancel
        ``on_cancel()`` when it was cancelled.
    on_finish
        ``on_finish()`` in every case, last.
    """

    def __init__(self, fn: Callable[[], Any], *, desc: str, on_event=None, on_done=None, on_error=None,
                 on_cancel=None, on_finish=None):
        self.fn, self.desc = fn, desc
        self.on_event, self.on_done, self.on_error = on_event, on_done, on_error
        self.on_cancel, self.on_finish = on_cancel, on_finish
        self.worker = None
        self.cancelled = False
        self.running = False
        self.error: BaseException | None = None
        self.result: Any = None
        self.seconds = 0.0
        self._t0 = 0.0

    # ------------------------------------------------------------ control
    def should_stop(self) -> bool:
        """For engine functions that take ``should_stop=``: True once cancel was asked."""
        return self.cancelled

    def cancel(self) -> None:
        """Stop at the next progress event (the result is discarded)."""
        self.cancelled = True
        if self.worker is not None:
            self.worker.quit()

    def start(self) -> Job:
        self.running = True
        self._t0 = time.perf_counter()
        if sync_mode():
            self._run_sync()
        else:
            self._run_thread()
        return self

    # ------------------------------------------------------------ drivers
    def _gen(self):
        out = self.fn()
        if inspect.isgenerator(out):
            out = yield from out
        return out

    def _run_sync(self) -> None:
        gen = self._gen()
        try:
            while True:
                ev = next(gen)
                self._event(ev)
                if self.cancelled:
                    gen.close()
                    self._aborted()
                    break
        except StopIteration as stop:
            self._returned(stop.value)
        except Exception as err:  # reported to the widget, as on a thread
            self._errored(err)
        self._finished()

    def _run_thread(self) -> None:
        from napari.qt.threading import create_worker

        worker = create_worker(self._gen, _start_thread=False, _ignore_errors=True)  # on_error reports
        worker.yielded.connect(self._event)
        worker.returned.connect(self._returned)
        worker.errored.connect(self._errored)
        worker.aborted.connect(self._aborted)
        worker.finished.connect(self._finished)
        self.worker = worker
        worker.start()

    # ---------------------------------------------------------- callbacks
    def _event(self, ev) -> None:
        if self.on_event is not None:
            self.on_event(ev)

    def _returned(self, value) -> None:
        self.result = value
        self.seconds = time.perf_counter() - self._t0
        if self.cancelled:
            return
        if self.on_done is not None:
            self.on_done(value)

    def _errored(self, err) -> None:
        self.error = err
        if self.on_error is not None:
            self.on_error(err)

    def _aborted(self) -> None:
        self.cancelled = True
        if self.on_cancel is not None:
            self.on_cancel()

    def elapsed(self) -> float:
        """Seconds since the job started (its full duration once it has finished)."""
        return time.perf_counter() - self._t0 if self.running else self.seconds

    def _finished(self) -> None:
        self.running = False
        self.seconds = time.perf_counter() - self._t0
        if self.on_finish is not None:
            self.on_finish()


#: cores the napari worker keeps free for the GUI thread (``train.threads.training_threads(reserve=)``): none,
#: the policy already counts other processes' load, and the GUI thread idles while training runs
GUI_RESERVE = 0.0


def format_seconds(seconds: float) -> str:
    """``"4.2 s"``, ``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class ProgressTracker:
    """What a dock's progress bar shows for a stream of :class:`ProgressEvent` (plain Python, no Qt).

    :meth:`update` returns ``(value, maximum, text)``: ``maximum == 0`` means
    "busy, no count yet" (k-means initialisation, building the graph);
    training steps count over every epoch, and the text reads
    ``epoch 2/10 · loss 1.234 · 1 min 05 s left``. The time left is the time per
    step measured since the first step (so setup time does not distort it).
    """

    def __init__(self, desc: str, *, clock=time.perf_counter):
        self.desc, self.clock = desc, clock
        self.value, self.maximum, self.text = 0, 0, f"{desc}…"
        self._first: tuple[float, int] | None = None
        self._loss: float | None = None
        self._val: tuple[float, int | None] | None = None  # last validation loss and best epoch, when reported

    def update(self, ev) -> tuple[int, int, str]:
        if not isinstance(ev, ProgressEvent):
            return self.value, self.maximum, self.text
        if ev.stage in ("step", "epoch") and ev.n_epochs:
            loss = ev.metrics.get("loss")
            if loss is not None and ev.stage == "epoch":
                self._loss = float(loss)
            elif loss is not None and self._loss is None:
                self._loss = float(loss)
            if ev.stage == "step" and ev.total:
                self.maximum = ev.total * ev.n_epochs
                self.value = (ev.epoch - 1) * ev.total + ev.step
            elif ev.stage == "epoch" and self.maximum:
                self.value = ev.epoch * (self.maximum // ev.n_epochs)
            if ev.stage == "epoch" and "val_loss" in ev.metrics:  # a model that chooses its length by validation
                self._val = (float(ev.metrics["val_loss"]), ev.metrics.get("best_epoch"))
                if ev.metrics.get("stopped"):  # validation ends training before the epoch cap: the bar completes
                    self.value = self.maximum
                    self.text = (f"epoch {ev.epoch}: validation loss no longer improving, training ends "
                                 f"(best epoch {self._val[1]})")
                    return self.value, self.maximum, self.text
            parts = [f"epoch {ev.epoch}/{ev.n_epochs}"]
            if self._loss is not None:
                parts.append(f"loss {self._loss:.3f}")
            if self._val is not None:
                parts.append(f"validation {self._val[0]:.3f} (best epoch {self._val[1]})")
            left = self.seconds_left()
            if left is not None:  # with a validation set the epochs are a cap: the time left is at most this
                parts.append(f"{'at most ' if self._val is not None else ''}{format_seconds(left)} left")
            self.text = " · ".join(parts)
        elif ev.stage == "step" and ev.total:  # a task's own counted steps
            self.maximum, self.value = ev.total, ev.step
            left = self.seconds_left()
            self.text = (ev.message or f"{self.desc}: {ev.step}/{ev.total}") + (
                f" · {format_seconds(left)} left" if left is not None else "")
        elif ev.message:
            self.maximum, self.value = 0, 0
            self._first = None
            self.text = ev.message
        return self.value, self.maximum, self.text

    def seconds_left(self) -> float | None:
        if not self.maximum:
            return None
        now = self.clock()
        if self._first is None:
            self._first = (now, self.value)
            return None
        t0, v0 = self._first
        if self.value <= v0:
            return None
        return (now - t0) / (self.value - v0) * (self.maximum - self.value)
