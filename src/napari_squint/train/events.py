"""Plain progress events: the engine yields them, front-ends display them.

The CLI turns them into a terminal progress bar, napari into
``napari.utils.progress``; the engine itself never prints or imports a GUI.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProgressEvent:
    stage: str  #: "prepare", "kmeans", "step", "epoch", "done", "cancelled", or a task's own stage
    step: int = 0  #: steps done in this stage
    total: int = 0  #: steps in this stage (0 if unknown)
    epoch: int = 0
    n_epochs: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


class Cancelled(Exception):
    """Raised inside a front-end callback to stop the engine cleanly."""


def drive(gen: Generator[ProgressEvent, None, Any], *, callback: Callable[[ProgressEvent], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> tuple[Any, bool]:
    """Run an event generator to the end.

    Returns
    -------
    (result, cancelled): the generator's return value (None when cancelled) and
    whether ``should_stop`` or a :class:`Cancelled` from ``callback`` stopped it.
    """
    try:
        while True:
            event = next(gen)
            if callback is not None:
                callback(event)
            if should_stop is not None and should_stop():
                gen.close()
                return None, True
    except StopIteration as stop:
        return stop.value, False
    except Cancelled:
        gen.close()
        return None, True
