"""Run engine work off the GUI thread, with a napari progress bar and cancel.

The engine's long operations are generators of
:class:`~napari_squint.train.events.ProgressEvent` whose return value is the
result (``Squint.iter_train``); short ones are plain functions. :class:`Job`
drives either on a :func:`napari.qt.threading.create_worker` thread, turns the
events into ``napari.utils.progress`` updates and calls the widget back on the
GUI thread. Cancel asks the worker to stop at the next event.

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

    #: seconds a job runs before it gets a progress bar (quick jobs never show one: creating it repaints the window)
    PROGRESS_DELAY = 0.5

    def __init__(self, fn: Callable[[], Any], *, desc: str, on_event=None, on_done=None, on_error=None,
                 on_cancel=None, on_finish=None):
        self.fn, self.desc = fn, desc
        self.on_event, self.on_done, self.on_error = on_event, on_done, on_error
        self.on_cancel, self.on_finish = on_cancel, on_finish
        self.worker = None
        self.pbar = None
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
    def _open_progress(self) -> None:
        try:
            from napari.utils import cancelable_progress

            self.pbar = cancelable_progress(total=0, desc=self.desc)
        except Exception:  # no napari progress outside a viewer context: the label still updates
            self.pbar = None

    def _event(self, ev) -> None:
        if self.pbar is None and time.perf_counter() - self._t0 > self.PROGRESS_DELAY:
            self._open_progress()
        if self.pbar is not None:
            if getattr(self.pbar, "is_canceled", False) and not self.cancelled:
                self.cancel()
            if isinstance(ev, ProgressEvent):
                if ev.total and ev.stage == "step":
                    total = ev.total * max(ev.n_epochs, 1)
                    done = max(ev.epoch - 1, 0) * ev.total + ev.step
                    if self.pbar.total != total:
                        self.pbar.total = total
                    if done > self.pbar.n:
                        self.pbar.update(done - self.pbar.n)
                if ev.stage == "epoch" and ev.n_epochs:
                    loss = ev.metrics.get("loss")
                    tail = f" loss {loss:.3f}" if loss is not None else ""
                    self.pbar.set_description(f"{self.desc}: epoch {ev.epoch}/{ev.n_epochs}{tail}")
                elif ev.message:
                    self.pbar.set_description(f"{self.desc}: {ev.message[:60]}")
        if self.on_event is not None:
            self.on_event(ev)

    def _returned(self, value) -> None:
        self.result = value
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

    def _finished(self) -> None:
        self.running = False
        self.seconds = time.perf_counter() - self._t0
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None
        if self.on_finish is not None:
            self.on_finish()


def start_job(fn: Callable[[], Any], **kwargs) -> Job:
    """Create and start a :class:`Job`."""
    return Job(fn, **kwargs).start()
