"""MLflow logging: a parent run per train stage, a child run per repeat (and fold, grid member).

The tracking URI is an SQLite file in the repository root unless
``MLFLOW_TRACKING_URI`` says otherwise; it is set by the stage's ``main()``,
never at import. Metric histories are sent in batches of up to 1000 values.
"""

from __future__ import annotations

import contextlib
import os
import re
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
# MLflow 3 classifies experiments as GenAI or model training. Where its UI reads this tag (the
# experiment-kind inference; mlflow/server/js: the "mlflow.experimentKind" lookup), it is what
# decides; MLflow 3.x with the workflow switch reads the `workflowType` URL parameter first, so
# links also carry it: see runs_view_url.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# Per-run values of the per-member summary in metrics.json that are not a mean over repeats.
NOT_SUMMARY = {"runs", "diverged", "repeats_ok", "status", "grid_value"}


class StageKilled(BaseException):
    """SIGTERM or SIGINT arrived: end the open MLflow runs as KILLED and stop."""


def tracking_uri() -> str:
    """The store as the user names it (and the manifests record it): MLFLOW_TRACKING_URI or mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def store_uri(uri: str, cwd: Path | None = None) -> str:
    """Where to write ``uri``: the default store is the workspace's mlflow.db, also for DVC's temp runs.

    `dvc exp run --temp` and queued experiments run in ``<workspace>/.dvc/tmp/exps/<dir>``
    (dvc/repo/experiments/executor/local.py, TempDirExecutor); the relative default would write
    their runs to a store in that directory, deleted with it.
    """
    if uri != DEFAULT_TRACKING_URI:
        return uri
    here = (cwd or Path.cwd()).resolve()
    for directory in [here, *here.parents]:
        if directory.name == "exps" and directory.parent.name == "tmp" and directory.parent.parent.name == ".dvc":
            return f"sqlite:///{directory.parent.parent.parent / 'mlflow.db'}"
    return uri


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
        mlflow.set_tracking_uri(store_uri(self.uri))
        self.client = MlflowClient(store_uri(self.uri))
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            self.experiment_id = self.client.create_experiment(
                experiment_name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        else:
            self.experiment_id = experiment.experiment_id
            if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                # A store made before the tag existed: classify it now rather than leave it to inference.
                self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)

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
        """Per-epoch metrics with step = epoch (1-based), then the single values of ``final`` at their own keys.

        With ``max_steps``, a longer history is sampled at evenly spaced epochs (first and last kept).
        A metric that is zero throughout (no regularization term) is not sent. A ``final_<metric>``
        that repeats the last epoch of a history sent here is not sent either: the UI would draw it
        as a second, one-bar chart beside the curve that already ends on that value (the runs
        table's column for the curve shows the same last value).
        """
        timestamp = int(time.time() * 1000)
        sent = [key for key, values in metrics.items() if any(value != 0 for value in values)]
        batch = [
            Metric(key, metrics[key][epoch - 1], timestamp, epoch)
            for key in sent
            for epoch in sampled_epochs(len(metrics[key]), max_steps)
        ]
        batch += [
            Metric(key, value, timestamp, 0)
            for key, value in final.items()
            if not (key.startswith("final_") and key.removeprefix("final_") in metrics)
        ]
        # Synchronous on purpose: MLflow's asynchronous queue is shut down (about 1 s) at every
        # set_terminated, which made logging 50 sonar child runs cost three times their training.
        for start in range(0, len(batch), MAX_BATCH):
            self.client.log_batch(run_id, metrics=batch[start : start + MAX_BATCH], synchronous=True)

    def log_summary(self, run_id: str, summary: dict[str, dict[str, Any]]) -> None:
        """A parent run's metrics: per member, the mean over repeats of every final and best value.

        ``summary`` is the per-member summary of metrics.json. A single member's keys are logged as
        they are (``final_val_accuracy``), so the runs table compares variants in one column; a
        grid's members get a prefix (``hidden_dropout_0.1/final_val_accuracy``), which the UI shows
        as one section per member. Standard deviations stay in metrics.json.
        """
        timestamp = int(time.time() * 1000)
        batch = [
            Metric(_summary_key(member, key, len(summary) > 1), float(value), timestamp, 0)
            for member, entry in summary.items()
            for key, value in entry.items()
            if key not in NOT_SUMMARY and not key.endswith("_std") and isinstance(value, int | float)
        ]
        for start in range(0, len(batch), MAX_BATCH):
            self.client.log_batch(run_id, metrics=batch[start : start + MAX_BATCH], synchronous=True)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

    def log_artifact(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path))

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


def _summary_key(member: str, key: str, prefixed: bool) -> str:
    """``dropout_grid[hidden_dropout=0.1]`` -> ``hidden_dropout_0.1/<key>``: MLflow keys allow no brackets or '='."""
    if not prefixed:
        return key
    inside = member.split("[", 1)[-1].rstrip("]")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", inside) + "/" + key


def mlflow_ui_command(tracking_uri: str) -> str:
    """The command that serves a local store: one worker answers first on a small machine (README, MLflow)."""
    return f"mlflow ui --backend-store-uri {tracking_uri} --workers 1"


def runs_view_url(server: str, experiment_id: str) -> str:
    """The MLflow UI page that lists an experiment's runs (not MLflow 3's GenAI overview).

    The UI is a hash-routed single page: ``#/experiments/<id>/runs`` is the runs tab, and
    ``workflowType=machine_learning`` selects the "Model training" view that MLflow 3.x otherwise
    takes from the browser's last choice (default GenAI).
    """
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_url(server: str, run_id: str, experiment_id: str | None = None) -> str:
    """A run's page in the model-training view (without ``workflowType`` MLflow 3 shows it as a GenAI evaluation)."""
    path = f"experiments/{experiment_id}/runs/{run_id}" if experiment_id is not None else f"runs/{run_id}"
    return f"{server.rstrip('/')}/#/{path}?workflowType=machine_learning"


def sampled_epochs(epochs: int, max_steps: int | None) -> list[int]:
    """1-based epochs to log: all of them, or ``max_steps`` evenly spaced ones including the first and last."""
    if max_steps is None or epochs <= max_steps:
        return list(range(1, epochs + 1))
    return sorted({round(1 + i * (epochs - 1) / (max_steps - 1)) for i in range(max_steps)})


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."
