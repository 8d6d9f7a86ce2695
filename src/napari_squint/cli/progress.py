"""Terminal progress bar for engine events (the engine itself never prints)."""

from __future__ import annotations

import sys
import time

from napari_squint.train.events import ProgressEvent


class TerminalProgress:
    """Callable that renders :class:`ProgressEvent` on stderr."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.t0 = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, ev: ProgressEvent) -> None:
        el = time.perf_counter() - self.t0
        if ev.stage == "step":
            if not self.tty:
                return
            frac = ev.step / ev.total if ev.total else 0
            fill = int(self.width * min(frac, 1))
            self.stream.write(f"\repoch {ev.epoch}/{ev.n_epochs} [{'#' * fill}{'.' * (self.width - fill)}] "
                              f"loss {ev.metrics.get('loss', float('nan')):.3f} {el:6.1f}s")
        elif ev.stage == "epoch" and "val_loss" in ev.metrics:  # a model that chooses its length by validation
            m = ev.metrics
            end = "  (validation loss stopped improving: training ends)" if m.get("stopped") else ""
            self.stream.write(("\r" if self.tty else "") + f"epoch {ev.epoch}/{ev.n_epochs}  loss {m['loss']:.4f}  "
                              f"validation {m['val_loss']:.4f} (best: epoch {m.get('best_epoch', ev.epoch)})  "
                              f"lr {m.get('lr', float('nan')):.1e}  {el:.1f}s{end}\n")
        elif ev.stage == "epoch":
            m = ev.metrics
            self.stream.write(("\r" if self.tty else "") + f"epoch {ev.epoch}/{ev.n_epochs}  nb {m.get('nb_loss', 0):.4f}  "
                              f"adj {m.get('adj_loss', 0):.3f}  commit {m.get('commit_loss', 0):.4f}  "
                              f"util {m.get('utilisation', 0):.2f}  ppl {m.get('epoch_perplexity', 0):.1f}  "
                              f"{m.get('cells_per_s', 0):.0f} cells/s  {el:.1f}s\n")
        elif ev.stage == "encode":
            if self.tty or ev.step == 0:
                self.stream.write(("\r" if self.tty else "") + f"{ev.message}: chunk {ev.step + 1}/{ev.total} {el:6.1f}s"
                                  + ("" if self.tty else "\n"))
        else:
            msg = ev.message or ev.stage
            self.stream.write(f"[{el:6.1f}s] {msg}\n")
        self.stream.flush()
