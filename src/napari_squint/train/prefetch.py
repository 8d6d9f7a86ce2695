"""Assemble mini-batches in a background thread while the model trains on the previous one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def prefetch(items: Iterable, make: Callable[..., T], *, depth: int = 2) -> Iterator[T]:
    """Yield ``make(item)`` for each item, computing up to ``depth`` ahead in a thread.

    numpy gathers, sparse slicing and pinned-memory copies release the GIL, so
    batch assembly overlaps with the model's forward and backward passes. An
    exception in the producer is re-raised in the consumer. Closing the
    generator early stops the producer.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def producer():
        try:
            for it in items:
                if stop.is_set():
                    return
                q.put(make(it))
            q.put(_END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            q.put(err)

    th = threading.Thread(target=producer, daemon=True)
    th.start()
    try:
        while True:
            got = q.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        while th.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(timeout=0.05)
