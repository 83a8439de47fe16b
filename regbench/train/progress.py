"""The stage's progress line: which runs are training, at which epoch, and an ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """One compact status line per stage: rewritten in place on a terminal, throttled in a log."""

    def __init__(self, stage: str, total_runs: int, stream: TextIO = sys.stderr):
        self.stage, self.total_runs, self.stream = stage, total_runs, stream
        self.interactive = stream.isatty()
        self.started = time.perf_counter()
        self.last = 0.0
        self.done_runs = 0
        self.context, self.epochs, self.runs = "", 1, 1

    def begin(self, context: str, epochs: int, runs: int = 1) -> None:
        """The runs now training (several when they train together) and their epoch count."""
        self.context, self.epochs, self.runs = context, epochs, runs

    def __call__(self, epoch: int, logs: dict[str, float]) -> None:
        now = time.perf_counter()
        if now - self.last < (0.5 if self.interactive else 15.0) and epoch < self.epochs:
            return
        self.last = now
        fraction = (self.done_runs + self.runs * epoch / self.epochs) / self.total_runs
        elapsed = now - self.started
        # The first chunk includes tracing: an ETA from it would be wildly off.
        eta = f"{elapsed / fraction - elapsed:.0f}s" if fraction > 0.02 and elapsed > 5 else "?"
        line = (
            f"{self.stage} {self.context} epoch {epoch}/{self.epochs} "
            f"val_loss {logs.get('val_loss', float('nan')):.4f} val_acc {logs.get('val_accuracy', float('nan')):.4f} "
            f"| {100 * fraction:.0f}% ETA {eta}"
        )
        self.stream.write(("\r" + line.ljust(110)) if self.interactive else line + "\n")
        self.stream.flush()

    def run_done(self) -> None:
        self.done_runs += 1

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
        self.stream.write(f"{self.stage}: {self.done_runs} runs in {time.perf_counter() - self.started:.1f}s\n")
        self.stream.flush()
