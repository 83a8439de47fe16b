"""One run of a variant: the type that flows plan -> executor -> run store -> records.

A ``Run`` is made by the plan (``plan.plan_runs``: member, settings, repeat, seed, fold, and its rows of
the prepared data), trained by the executor (local or Ray), which fills in its ``history`` and
``evaluations``, and then stored (``runstore``) and written (``records``). Whoever wants to watch runs
(MLflow: ``tracking.ChildRuns``) implements ``RunObserver`` and is handed to the executor; no
training code knows who watches.

No Keras here: the records and claims layers import this module.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from regbench.config import VariantParams
from regbench.train.records import EPOCH_METRICS as METRICS


def binary_targets(y: np.ndarray) -> np.ndarray:
    """Targets as a column (n, 1) so losses see the same shape as the sigmoid output."""
    return y.reshape(-1, 1).astype(np.float32) if y.ndim == 1 else y.astype(np.float32)


@dataclass
class History:
    """What ``model.fit`` reports per epoch (``records.EPOCH_METRICS``), and whether the run diverged.

    Here, not beside the engines, so that reading a run back from the run store loads no Keras.
    """

    metrics: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    status: str = "ok"  # ok | diverged
    diverged_epoch: int | None = None
    seconds: float = 0.0

    @property
    def epochs(self) -> int:
        return len(self.metrics["loss"])

    def append(self, row: dict[str, float]) -> bool:
        """Add one epoch; return False (and mark the run diverged) if its loss is not finite."""
        if not all(math.isfinite(row[name]) for name in ("loss", "val_loss")):
            self.status = "diverged"
            self.diverged_epoch = self.epochs + 1
            return False
        for name in METRICS:
            self.metrics[name].append(float(row[name]))
        return True


@dataclass
class FitData:
    """A run's training and validation rows (a dense array or a ``BinaryCsr``; targets as columns)."""

    x_train: Any
    y_train: np.ndarray
    x_val: Any
    y_val: np.ndarray

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]

    @property
    def output_dim(self) -> int:
        return self.y_train.shape[1]


@dataclass
class Run:
    """Where a run sits (member, repeat, seed, fold), its settings, its rows, then what training produced."""

    member: str
    grid_value: float | None
    params: VariantParams
    repeat: int
    # The repeat's seed (what runs.json and the run store record); ``training_seed`` is what training uses.
    seed: int
    fold: int | None
    label: str = ""
    # The run's rows of the prepared data (``plan.attach_data``); not sent to a Ray worker, which rebuilds them.
    data: FitData | None = field(default=None, repr=False, compare=False)
    # A separate test set (x, y) the finished run is evaluated on, where the experiment has one.
    test: tuple[Any, np.ndarray] | None = field(default=None, repr=False, compare=False)
    # What training produced: its History, the inference-mode evaluations, the MLflow run (if logged).
    history: History | None = None
    evaluations: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def training_seed(self) -> int:
        """Each fold of a repeat gets its own initial weights; fold None keeps the repeat's seed."""
        return self.seed if self.fold is None else self.seed * 100 + self.fold

    @classmethod
    def alone(cls, params: VariantParams, seed: int, data: FitData, test=None) -> Run:
        """A run outside any variant (tests, benchmarks): member ``run``, repeat 0, no fold."""
        return cls("run", None, params, 0, seed, None, f"run seed {seed}", data, test)

    def without_data(self) -> Run:
        """The run as sent to a Ray worker: settings and placement only (the worker rebuilds its rows)."""
        return dataclasses.replace(self, data=None, test=None)

    def evaluation_sets(self) -> dict[str, tuple[Any, np.ndarray]]:
        """The sets a finished run is evaluated on in inference mode, by metric prefix.

        ``train_eval``: its own training rows (what the tutorials' model.evaluate(trainX) prints);
        ``test``: the separate test set, where the experiment has one.
        """
        sets = {"train_eval": (self.data.x_train, self.data.y_train)}
        if self.test is not None:
            sets["test"] = self.test
        return sets


class RunObserver(Protocol):
    """Watches the runs an executor trains (MLflow's child runs: ``tracking.ChildRuns``).

    ``index`` is the run's position in the list the executor was given. ``on_run_finished`` may record
    where it logged the run in ``run.run_id``. ``on_failure`` is called once when training stops with an
    error (a failed run, Ctrl-C, SIGTERM), so the observer can close what it opened.
    """

    def on_run_started(self, index: int, run: Run) -> None: ...

    def on_run_finished(self, index: int, run: Run) -> None: ...

    def on_failure(self, error: BaseException) -> None: ...
