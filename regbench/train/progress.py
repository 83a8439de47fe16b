"""The stage's progress line: which runs are training, at which epoch, and an honest ETA.

A run counts as done only once its evaluation and MLflow logging are done (``run_done``); a run
still training counts for the share of a run's time that training takes, measured on the runs
finished so far (training ends at its last epoch; evaluating and logging take the rest). So the
percentage never passes 100 % and the ETA includes evaluation and logging.
"""

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
        # Seconds spent training and spent after training (evaluation, logging), over finished groups.
        self.training_seconds = self.after_seconds = 0.0
        self.group_started = self.started
        self.training_ended: float | None = None

    def begin(self, context: str, epochs: int, runs: int = 1) -> None:
        """The runs now training (several when they train together) and their epoch count."""
        self.context, self.epochs, self.runs = context, max(1, epochs), runs
        self.group_started, self.training_ended = time.perf_counter(), None

    def fraction(self, epoch: int) -> float:
        """The share of the stage's work done: finished runs, plus the training share of the runs in flight."""
        if self.total_runs <= 0:
            return 1.0
        if self.done_runs >= self.total_runs:
            return 1.0
        measured = self.training_seconds + self.after_seconds
        training_share = self.training_seconds / measured if measured > 0 else 1.0
        in_flight = max(0, min(self.runs, self.total_runs - self.done_runs))
        done = self.done_runs + in_flight * training_share * min(1.0, epoch / self.epochs)
        # Until the last run is logged, the stage is not done: never show 100 % (nor more) before then.
        return min(done / self.total_runs, 0.99)

    def __call__(self, epoch: int, logs: dict[str, float]) -> None:
        now = time.perf_counter()
        if epoch >= self.epochs and self.training_ended is None:
            self.training_ended = now
        if now - self.last < (0.5 if self.interactive else 15.0) and epoch < self.epochs:
            return
        self.last = now
        fraction = self.fraction(epoch)
        elapsed = now - self.started
        # The first chunk includes tracing: an ETA from it would be wildly off.
        eta = f"{max(0.0, elapsed / fraction - elapsed):.0f}s" if fraction > 0.02 and elapsed > 5 else "?"
        line = (
            f"{self.stage} {self.context} epoch {min(epoch, self.epochs)}/{self.epochs} "
            f"val_loss {logs.get('val_loss', float('nan')):.4f} val_acc {logs.get('val_accuracy', float('nan')):.4f} "
            f"| {100 * fraction:.0f}% ETA {eta}"
        )
        self.stream.write(("\r" + line.ljust(110)) if self.interactive else line + "\n")
        self.stream.flush()

    def run_done(self) -> None:
        now = time.perf_counter()
        self.done_runs += 1
        if self.training_ended is not None:
            # The group's training time once, then the time after it until each of its runs is logged.
            self.training_seconds += self.training_ended - self.group_started
            self.after_seconds += now - self.training_ended
            self.group_started = self.training_ended = now

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def close(self) -> None:
        """End the in-place line; the stage prints its one summary line (stages/train.py)."""
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
