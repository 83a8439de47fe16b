"""MLflow logging: a parent run per train stage, a child run per repeat (and fold, grid member).

The tracking URI is ``MLFLOW_TRACKING_URI`` when set, else an SQLite file in the root of the
repository the user ran DVC from (see ``tracking_uri``); it is set by the stage's ``main()``, never
at import. Metric histories are sent in batches of up to 1000 values.

Several stages may write to one store at once (``dvc queue start -j 2``): first-time creation of an
SQLite store and of an MLflow experiment are serialized, and a stage only closes a RUNNING run left
behind when the process that owns it is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from regbench.cli import Stopped
from regbench.io import start_time
from regbench.train.records import divergence_reason

log = logging.getLogger(__name__)
DEFAULT_STORE = "mlflow.db"
MAX_BATCH = 1000  # MLflow accepts at most 1000 metrics per log_batch call
STAGE_TAG = "regbench.stage"
# Only a stage's parent run carries it (child runs carry regbench.member).
VARIANT_TAG = "regbench.variant"
# Who owns a run: a stage closes a RUNNING run as stale only when this process no longer exists.
OWNER_TAGS = ("regbench.owner.host", "regbench.owner.pid", "regbench.owner.started")
# MLflow 3 shows an experiment as GenAI (an "Overview" of traces) or as model training (the runs).
# MLflow 3.17's UI takes that workflow from the `workflowType` URL parameter, then from the browser's
# local storage (`mlflow.workflowType`), default GenAI; with its workflow switch on (always, in 3.17)
# the experiment's kind is derived from that workflow and this tag is not read (server/js build:
# WorkflowTypeProvider, useExperimentKind). So links carry the parameter (runs_view_url, run_url). The
# tag is what decides where the switch is off, and in newer MLflow sources, whose WorkflowTypeProvider
# switches to model training on opening an experiment of kind custom_model_development.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# MLflow 3.17's runs table shows no metric column until the user picks some under "Columns". Its
# "shared view" (the runs page's Share button) is an experiment tag `mlflow.sharedViewState.<key>`
# holding the view's state as JSON, opened by `?viewStateShareKey=<key>` (mlflow/server/js: the
# viewStateShareKey lookup; plain JSON is accepted beside the compressed form the button writes). Each
# experiment gets one selecting the parent runs' summary columns and sorting by variant, and
# runs_view_url opens it, so the variants are compared in the table without picking columns first.
# The sort matters as much: the table loads 100 runs at a time, newest first, so with a sonar
# stage's 50-100 child runs the first page held one or two parent runs; sorted by the variant tag,
# which only parent runs carry, every parent comes first (runs without it sort last) and the child
# runs follow, unfolded (MLflow nests them only in its default sort).
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
SHARED_VIEW_KEY = "regbench-summary"
SUMMARY_COLUMNS = (
    "final_val_accuracy",
    "final_val_loss",
    "best_val_loss",
    "best_val_loss_epoch",
    "train_eval_accuracy",
)
# Per-run values of the per-member summary in metrics.json that are not a mean over repeats.
NOT_SUMMARY = {"runs", "diverged", "repeats_ok", "status", "grid_value"}


# SIGTERM or SIGINT arrived (regbench.cli.stop_on_signals): end the open MLflow runs as KILLED and stop.
StageKilled = Stopped


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set; otherwise ``mlflow.db`` in the repository the user ran DVC from.

    A ``--temp`` or queued ``dvc exp run`` runs its stages in a temporary copy of the repository that DVC
    deletes afterwards, so a path relative to the working directory would lose every run. DVC sets
    ``DVC_ROOT`` to the originating repository for those (dvc/repo/experiments/queue/base.py) and to the
    workspace for a plain ``dvc repro`` (dvc/stage/run.py); outside DVC the working directory is the root.
    """
    explicit = os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd())
    return f"sqlite:///{(root / DEFAULT_STORE).resolve()}"


def _sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialize first-time setup of a local SQLite store across processes.

    MLflow creates an SQLite store's tables on first use without a lock; two processes opening a new file
    at once race (``table ... already exists``). A server store serializes on its own side.
    """
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=600):
        yield


def owner_tags() -> dict[str, str]:
    """This process, identified so that another stage can tell whether it still runs."""
    return {
        OWNER_TAGS[0]: socket.gethostname(),
        OWNER_TAGS[1]: str(os.getpid()),
        OWNER_TAGS[2]: start_time(),
    }


def owner_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process that tagged a run still exists: None when it ran on another host (unknown).

    The start time guards against a recycled pid. Runs of older versions carry no owner: they count as gone,
    which is what the earlier cleanup assumed for every RUNNING run.
    """
    host, pid, started = (tags.get(key) for key in OWNER_TAGS)
    if host is None or pid is None or started is None:
        return False
    if host != socket.gethostname():
        return None
    try:
        return start_time(int(pid)) == started
    except ValueError:
        return False


@contextlib.contextmanager
def killed_on_signal() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into StageKilled so ``finally`` blocks can close runs."""

    def handler(signum, frame):
        raise StageKilled(signum)

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
        # The parent run of the stage being trained, open until ``end_stage_run``.
        self.stage_run: str | None = None
        with _store_lock(self.uri):
            # The client opens (and on first use creates) the store: inside the lock.
            self.client = MlflowClient(self.uri)
            self.experiment_id = self._experiment(experiment_name)

    def _experiment(self, name: str) -> str:
        """Get or create, classified as model training.

        With another process creating the same experiment, "already exists" means done.
        """
        tags = experiment_tags()
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(name, tags=tags)
            except MlflowException as error:
                if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                    raise
                experiment = self.client.get_experiment_by_name(name)
        for key, value in tags.items():
            if experiment.tags.get(key) != value:
                # A store made before the tag existed: classify it now rather than leave it to inference.
                self.client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id

    def close_stale_runs(self, stage: str) -> int:
        """Runs of this stage left RUNNING by a process that is gone (SIGKILL, a crash) become KILLED.

        A run whose owner still runs (a parallel queued experiment training the same stage) is left alone,
        and so is one owned by another host, which cannot be checked from here.
        """
        running = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STAGE_TAG}` = '{stage}' and attributes.status = 'RUNNING'",
            max_results=5000,
        )
        closed = 0
        for run in running:
            alive = owner_alive(run.data.tags)
            if alive is None:
                log.info("MLflow run %s of %s is owned by another host; left RUNNING", run.info.run_id, stage)
            elif not alive:
                self.client.set_terminated(run.info.run_id, status="KILLED")
                closed += 1
        return closed

    def start(self, name: str, tags: dict[str, str], params: dict[str, Any], parent: str | None = None) -> str:
        all_tags = {**owner_tags(), **tags}
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

    def end_stage_run(self, status: str) -> None:
        """End the stage's parent run: FINISHED only once the stage's outputs are in place (stages/train.py).

        Ending it when training returned would show a FINISHED run for a stage that then failed or was
        killed while writing its outputs.
        """
        if self.stage_run is not None:
            self.end(self.stage_run, status=status)
            self.stage_run = None


def _summary_key(member: str, key: str, prefixed: bool) -> str:
    """``dropout_grid[hidden_dropout=0.1]`` -> ``hidden_dropout_0.1/<key>``: MLflow keys allow no brackets or '='."""
    if not prefixed:
        return key
    inside = member.split("[", 1)[-1].rstrip("]")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", inside) + "/" + key


def mlflow_ui_command(tracking_uri: str) -> str:
    """The command that serves a local store: one worker answers first on a small machine (README, MLflow)."""
    return f"mlflow ui --backend-store-uri {tracking_uri} --workers 1"


def experiment_tags() -> dict[str, str]:
    """What every regbench experiment is tagged with: its kind, and the shared view runs_view_url opens."""
    view = {
        "selectedColumns": [f"metrics.`{metric}`" for metric in SUMMARY_COLUMNS],
        "orderByKey": f"tags.`{VARIANT_TAG}`",
        "orderByAsc": True,
    }
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, SHARED_VIEW_TAG_PREFIX + SHARED_VIEW_KEY: json.dumps(view)}


def runs_view_url(server: str, experiment_id: str) -> str:
    """The MLflow UI page that lists an experiment's runs (not MLflow 3's GenAI overview).

    The UI is a hash-routed single page: ``#/experiments/<id>/runs`` is the runs tab,
    ``workflowType=machine_learning`` selects the "Model training" view that MLflow 3.x otherwise
    takes from the browser's last choice (default GenAI), and ``viewStateShareKey`` opens the
    experiment's shared view with the summary columns (SHARED_VIEW_KEY).
    """
    return (
        f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs"
        f"?workflowType=machine_learning&viewStateShareKey={SHARED_VIEW_KEY}"
    )


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
        VARIANT_TAG: variant,
        **dvc_tags(context),
    }
    tracker.stage_run = tracker.start(name, tags=tags, params=params)
    return tracker.stage_run


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
            tags = {
                "regbench.status": "diverged",
                "regbench.diverged_epoch": str(history.diverged_epoch),
                "regbench.diverged_reason": str(
                    divergence_reason(history.status, history.diverged_epoch, history.epochs)
                ),
            }
            self.tracker.set_tags(run_id, tags)
        self.tracker.end(run_id, status="FINISHED" if history.status == "ok" else "FAILED")

    def abort(self, error: BaseException) -> None:
        """Any error, not only a kill, must close the open child runs: RUNNING forever misleads the UI."""
        if self.tracker is None:
            return
        for index, run_id in self.open_runs.items():
            if index not in self.closed:
                self.tracker.end(run_id, status="KILLED" if isinstance(error, StageKilled) else "FAILED")
