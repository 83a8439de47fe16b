"""MLflow logging: a parent run per train stage, a child run per repeat (and fold, grid member).

The tracking URI is an SQLite file in the repository root unless
``MLFLOW_TRACKING_URI`` says otherwise; it is set by the stage's ``main()``,
never at import. Metric histories are sent in batches of up to 1000 values.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MAX_BATCH = 1000  # MLflow accepts at most 1000 metrics per log_batch call
STAGE_TAG = "regbench.stage"


class StageKilled(BaseException):
    """SIGTERM or SIGINT arrived: end the open MLflow runs as KILLED and stop."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


@contextlib.contextmanager
def killed_on_signal() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into StageKilled so ``finally`` blocks can close runs."""

    def handler(signum, frame):
        raise StageKilled(f"received signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Tracker:
    def __init__(self, experiment_name: str, uri: str | None = None):
        self.uri = uri or tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        self.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(experiment_name)

    def close_stale_runs(self, stage: str) -> int:
        """Runs of this stage left RUNNING by a process killed without warning (SIGKILL) become KILLED."""
        stale = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STAGE_TAG}` = '{stage}' and attributes.status = 'RUNNING'",
            max_results=5000,
        )
        for run in stale:
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(stale)

    def start(self, name: str, tags: dict[str, str], params: dict[str, Any], parent: str | None = None) -> str:
        all_tags = dict(tags)
        if parent is not None:
            all_tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run_id = run.info.run_id
        items = [Param(key, _param_value(value)) for key, value in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100], synchronous=True)
        return run_id

    def log_history(
        self, run_id: str, metrics: dict[str, list[float]], final: dict[str, float], max_steps: int | None = None
    ) -> None:
        """Per-epoch metrics with step = epoch (1-based), then the final values at their own keys.

        With ``max_steps``, a longer history is sampled at evenly spaced epochs (first and last kept).
        A metric that is zero throughout (no regularization term) is not sent.
        """
        timestamp = int(time.time() * 1000)
        batch = [
            Metric(key, values[epoch - 1], timestamp, epoch)
            for key, values in metrics.items()
            if any(value != 0 for value in values)
            for epoch in sampled_epochs(len(values), max_steps)
        ]
        batch += [Metric(key, value, timestamp, 0) for key, value in final.items()]
        # Synchronous on purpose: MLflow's asynchronous queue is shut down (about 1 s) at every
        # set_terminated, which made logging 50 sonar child runs cost three times their training.
        for start in range(0, len(batch), MAX_BATCH):
            self.client.log_batch(run_id, metrics=batch[start : start + MAX_BATCH], synchronous=True)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

    def log_artifact(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path))

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


def sampled_epochs(epochs: int, max_steps: int | None) -> list[int]:
    """1-based epochs to log: all of them, or ``max_steps`` evenly spaced ones including the first and last."""
    if max_steps is None or epochs <= max_steps:
        return list(range(1, epochs + 1))
    return sorted({round(1 + i * (epochs - 1) / (max_steps - 1)) for i in range(max_steps)})


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


# --- the train stage's runs ------------------------------------------------------


def dvc_tags(context: dict[str, str]) -> dict[str, str]:
    """The DVC experiment's name, when the stage runs inside ``dvc exp run``."""
    return {"dvc.exp_name": context["DVC_EXP_NAME"]} if "DVC_EXP_NAME" in context else {}


def start_stage_run(tracker: Tracker, name: str, context: dict[str, str], variant: str, params: dict[str, Any]) -> str:
    """The parent run of a train stage, after closing what a killed earlier attempt left RUNNING."""
    tracker.close_stale_runs(context["stage"])
    tags = {
        STAGE_TAG: context["stage"],
        "regbench.git_revision": context["git_revision"],
        "regbench.data_digest": context["data_digest"],
        "regbench.data_source": context["data_source"],
        "regbench.variant": variant,
        **dvc_tags(context),
    }
    return tracker.start(name, tags=tags, params=params)


class ChildRuns:
    """The MLflow child run of each run of a stage (member, repeat, fold): opened, filled and closed.

    Without a tracker (tests that do not log) every call is a no-op and ``run_id`` is None.
    """

    def __init__(self, tracker: Tracker | None, parent: str | None, context: dict[str, str], max_steps: int):
        self.tracker, self.parent, self.context, self.max_steps = tracker, parent, context, max_steps
        self.open_runs: dict[int, str] = {}
        self.closed: set[int] = set()

    def open(
        self, index: int, member: str, repeat: int, seed: int, fold: int | None, params: dict[str, Any]
    ) -> str | None:
        """Open run ``index`` once (per-run engines open it when it starts, stacked ones when it is done)."""
        if self.tracker is None:
            return None
        if index not in self.open_runs:
            self.open_runs[index] = self.tracker.start(
                f"{member}-r{repeat}" + (f"-f{fold}" if fold is not None else ""),
                tags={
                    STAGE_TAG: self.context["stage"],
                    "regbench.member": member,
                    "regbench.repeat": str(repeat),
                    "regbench.seed": str(seed),
                    "regbench.fold": "" if fold is None else str(fold),
                    **dvc_tags(self.context),
                },
                params={"seed": seed, "repeat": repeat, "fold": fold, **params},
                parent=self.parent,
            )
        return self.open_runs[index]

    def close(self, index: int, history, evaluations: dict[str, float]) -> None:
        """Log the run's per-epoch history and final values, and end it (FAILED when it diverged)."""
        self.closed.add(index)
        if self.tracker is None:
            return
        run_id = self.open_runs[index]
        final = {f"final_{k}": v[-1] for k, v in history.metrics.items() if v}
        final.update(evaluations)
        self.tracker.log_history(run_id, history.metrics, final, self.max_steps)
        if history.status == "diverged":
            tags = {"regbench.status": "diverged", "regbench.diverged_epoch": str(history.diverged_epoch)}
            self.tracker.set_tags(run_id, tags)
        self.tracker.end(run_id, status="FINISHED" if history.status == "ok" else "FAILED")

    def abort(self, error: BaseException) -> None:
        """Any error, not only a kill, must close the open child runs: RUNNING forever misleads the UI."""
        if self.tracker is None:
            return
        for index, run_id in self.open_runs.items():
            if index not in self.closed:
                self.tracker.end(run_id, status="KILLED" if isinstance(error, StageKilled) else "FAILED")
