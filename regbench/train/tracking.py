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
import getpass
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
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
from regbench.schema import flatten, to_plain
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


# MLflow's own run tags (mlflow.utils.mlflow_tags), which its UI shows as Source, User, Version and Description.
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
USER_TAG = "mlflow.user"
NOTE_TAG = "mlflow.note.content"
# The claims stage's own run (one per `claims` stage run) and the link to it on each parent run it judged.
CLAIMS_EXPERIMENT = "regbench/claims"
CLAIMS_RUN_TAG = "regbench.claims_run"
# The untracked run log: one JSON line per stage run (timings, MLflow ids, host, paths), beside the stores.
RUN_LOG_DIR = Path("logs")

# SIGTERM or SIGINT arrived (regbench.cli.stop_on_signals): end the open MLflow runs as KILLED and stop.
StageKilled = Stopped


class StoreUnwritable(RuntimeError):
    """The MLflow store cannot be written: its disk is full, it is read-only, or it is gone.

    A RuntimeError, so the stage ends on this one line (regbench.cli.run_stage), not a traceback chain.
    """


# Words of SQLite's and the OS's messages for a store that cannot take writes. Other MLflow errors
# (a bad parameter, a server's 4xx) are bugs and keep their traceback.
_UNWRITABLE = re.compile(
    r"disk is full|No space left|readonly database|read-only|Read-only|unable to open database|disk I/O error|"
    r"Permission denied",
)


def store_location(uri: str) -> str:
    """What a user must free or fix: the SQLite file, or the URI itself."""
    path = _sqlite_path(uri)
    return str(path) if path is not None else uri


def unwritable(uri: str, error: BaseException) -> StoreUnwritable | None:
    """The one-line error for a store that cannot be written, or None when ``error`` is something else."""
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", " ".join(str(error).split()))
    if not isinstance(error, OSError) and not _UNWRITABLE.search(text):
        return None
    cause = text[:160] + ("…" if len(text) > 160 else "")
    return StoreUnwritable(
        f"the MLflow store {store_location(uri)} cannot be written ({cause}): free space on its disk or make it "
        "writable (or set MLFLOW_TRACKING_URI to another store), then rerun; the runs trained so far are kept "
        "in the stage's run store and will not be trained again"
    )


def _not_unwritable(record: logging.LogRecord) -> bool:
    """MLflow logs every SQLAlchemy error with its traceback before raising it: not those we report in one line."""
    error = record.exc_info[1] if record.exc_info else None
    return not (error is not None and _UNWRITABLE.search(str(error)))


logging.getLogger("mlflow.store.db.utils").addFilter(_not_unwritable)


@contextlib.contextmanager
def _writing(uri: str) -> Iterator[None]:
    """Turn a write that failed for lack of space or permission into StoreUnwritable, without the chain."""
    try:
        yield
    except StoreUnwritable:
        raise
    except Exception as error:  # noqa: BLE001 - filtered by `unwritable`; everything else is re-raised
        failure = unwritable(uri, error)
        if failure is None:
            raise
        raise failure from None


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


def artifact_location(uri: str, experiment_name: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside its store, whatever the working directory.

    Without one MLflow uses ``<cwd>/mlruns``, which under ``dvc exp run --temp`` or ``--queue`` is DVC's
    temporary copy of the repository, deleted after the run, and which every store shares. For SQLite:
    ``<name of the .db>-artifacts/<experiment>`` next to the .db file (two stores in one folder do not
    share it). A tracking server chooses its own (None: its default, e.g. proxied artifacts).
    """
    path = _sqlite_path(uri)
    if path is not None:
        return (path.parent / f"{path.stem}-artifacts" / experiment_name).resolve().as_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    # Another database URI (postgresql://, mysql://): the repository the user ran DVC from.
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd())
    return (root / "mlruns" / experiment_name).resolve().as_uri()


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


class Tracker:
    def __init__(self, experiment_name: str, uri: str | None = None, source: str = "stages/train.py"):
        """``source``: the entry point that logs (MLflow's Source column)."""
        self.uri = uri or tracking_uri()
        self.source = source
        mlflow.set_tracking_uri(self.uri)
        # The parent run of the stage being trained, open until ``end_stage_run``.
        self.stage_run: str | None = None
        with _writing(self.uri), _store_lock(self.uri):
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
                return self.client.create_experiment(
                    name, artifact_location=artifact_location(self.uri, name), tags=tags
                )
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
        all_tags = {**owner_tags(), **standard_tags(self.source), **tags}
        if parent is not None:
            all_tags["mlflow.parentRunId"] = parent
        with _writing(self.uri):
            run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
            run_id = run.info.run_id
            items = [Param(key, _param_value(value)) for key, value in params.items()]
            for start in range(0, len(items), 100):
                self.client.log_batch(run_id, params=items[start : start + 100], synchronous=True)
        return run_id

    def log_dataset(self, run_id: str, dataset: dict[str, Any], context: str = "training") -> None:
        """The run's input data (MLflow's Datasets column): name, source and the prepared data's digest."""
        from mlflow.entities import DatasetInput, InputTag

        with _writing(self.uri):
            entity = dataset_entity(dataset)
            self.client.log_inputs(run_id, [DatasetInput(entity, [InputTag("mlflow.data.context", context)])])

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
        with _writing(self.uri):
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
        with _writing(self.uri):
            for start in range(0, len(batch), MAX_BATCH):
                self.client.log_batch(run_id, metrics=batch[start : start + MAX_BATCH], synchronous=True)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        with _writing(self.uri):
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

    def log_artifact(self, run_id: str, path: Path) -> None:
        with _writing(self.uri):
            self.client.log_artifact(run_id, str(path))

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        with _writing(self.uri):
            self.client.set_terminated(run_id, status=status)

    def end_stage_run(self, status: str) -> None:
        """End the stage's parent run: FINISHED only once the stage's outputs are in place (stages/train.py).

        Ending it when training returned would show a FINISHED run for a stage that then failed or was
        killed while writing its outputs. A store that cannot be written any more cannot record a
        failure either: the run stays RUNNING until the next stage's close_stale_runs ends it KILLED.
        """
        if self.stage_run is not None:
            try:
                self.end(self.stage_run, status=status)
            except StoreUnwritable:
                if status == "FINISHED":
                    raise
            self.stage_run = None


def _summary_key(member: str, key: str, prefixed: bool) -> str:
    """``dropout_grid[hidden_dropout=0.1]`` -> ``hidden_dropout_0.1/<key>``: MLflow keys allow no brackets or '='."""
    if not prefixed:
        return key
    inside = member.split("[", 1)[-1].rstrip("]")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", inside) + "/" + key


def mlflow_ui_command(tracking_uri: str) -> str:
    """The command that serves a local store: one worker, and none of MLflow 3's GenAI job processes.

    One worker answers first on a small machine; MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false keeps the server
    from starting its job runner and Huey consumers, which regbench never uses: 0.48 GiB RSS in 2 processes
    instead of 1.6-1.7 GiB in 10 (bench/mlflow_ui_memory.md).
    """
    return f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {tracking_uri} --workers 1"


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


# --- MLflow's standard fields -----------------------------------------------------


def standard_tags(source: str) -> dict[str, str]:
    """MLflow's Source (the stage's entry point, run locally) and User of a run."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = "unknown"
    return {SOURCE_NAME_TAG: source, SOURCE_TYPE_TAG: "LOCAL", USER_TAG: user}


def git_tags(revision: str) -> dict[str, str]:
    """MLflow's commit field takes a bare commit; uncommitted code changes are said beside it."""
    if revision in ("", "unknown"):
        return {}
    commit, dirty = revision.removesuffix("-dirty"), revision.endswith("-dirty")
    return {GIT_COMMIT_TAG: commit, "regbench.git_dirty": str(dirty).lower()}


def dataset_entity(dataset: dict[str, Any]):
    """The prepared data as an MLflow dataset: its experiment's name, where it came from, its content digest.

    ``dataset``: name, digest (the prepared data's content digest) and source (the prepared manifest's
    source record). MLflow keeps at most 36 characters of a digest; the full digest is in the source.
    """
    from mlflow.entities import Dataset

    source = dataset.get("source") or {}
    origin = source.get("url") or source.get("origin") or source.get("package") or source.get("source") or "generated"
    source_json = json.dumps({"uri": origin, "source": source.get("source"), "content_digest": dataset["digest"]})
    return Dataset(
        name=dataset["name"],
        digest=dataset["digest"][:32],
        source_type="http" if str(origin).startswith(("http://", "https://")) else "local",
        source=source_json,
    )


def variant_note(experiment: str, variant: str, differences: dict[str, Any], seeds: int, folds: int | None) -> str:
    """One line for MLflow's Description: what the variant changes from its experiment's defaults."""
    changed = ", ".join(f"{k}={v}" for k, v in sorted(differences.items())) or "the experiment's defaults"
    repeats = f"{seeds} seeds" + (f" x {folds} folds" if folds else "")
    return f"{experiment} / {variant}: {changed}; {repeats}"


def run_name(name: str, context: dict[str, str]) -> str:
    """A run's name, with the DVC experiment's name when the stage runs inside `dvc exp run`."""
    return f"{name} @{context['DVC_EXP_NAME']}" if context.get("DVC_EXP_NAME") else name


# --- the run log (untracked) -------------------------------------------------------


def run_log_path(stage: str) -> Path:
    """``logs/<stage>.jsonl`` in the repository DVC was run from (DVC_ROOT survives `--temp` and `--queue`)."""
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd())
    return root / RUN_LOG_DIR / f"{stage.replace('@', '-')}.jsonl"


def append_run_log(stage: str, record: dict[str, Any]) -> Path | None:
    """Append one stage run's record (what changes from run to run and so stays out of DVC and git).

    One line appended per run (several queued experiments may append at once: a single write of one line).
    A log that cannot be written costs the log only.
    """
    path = run_log_path(stage)
    line = json.dumps({"stage": stage, "finished": datetime.now(UTC).isoformat(timespec="seconds"), **record})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as log_file:
            log_file.write(line + "\n")
    except OSError as error:
        log.warning("run log %s not written: %s", path, error)
        return None
    return path


def read_run_log(stage: str) -> list[dict[str, Any]]:
    """Every record of the stage's run log, oldest first (none in a fresh clone)."""
    path = run_log_path(stage)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


def stage_parent_runs(client: MlflowClient, stages: list[str]) -> dict[str, Any]:
    """The newest FINISHED parent run of each train stage in the store ``client`` reads, by its tags.

    What links a stage's results to MLflow in any clone: the run ids themselves are not in the tracked outputs.
    """
    found: dict[str, Any] = {}
    experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith("regbench/")]
    for stage in stages:
        if not experiments:
            break
        runs = client.search_runs(
            experiments,
            filter_string=f"tags.`{STAGE_TAG}` = 'train@{stage}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=20,
        )
        parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
        if parents:
            found[stage] = parents[0]
    return found


# --- the train stage's runs ------------------------------------------------------


def dvc_tags(context: dict[str, str]) -> dict[str, str]:
    """The DVC experiment's name, when the stage runs inside ``dvc exp run``."""
    return {"dvc.exp_name": context["DVC_EXP_NAME"]} if "DVC_EXP_NAME" in context else {}


def start_stage_run(
    tracker: Tracker,
    name: str,
    context: dict[str, str],
    variant: str,
    params: dict[str, Any],
    note: str | None = None,
    dataset: dict[str, Any] | None = None,
) -> str:
    """The parent run of a train stage, after closing what a killed earlier attempt left RUNNING.

    ``note``: the variant in one line (MLflow's Description); ``dataset``: the prepared data (Datasets).
    """
    with _writing(tracker.uri):
        tracker.close_stale_runs(context["stage"])
    tags = {
        STAGE_TAG: context["stage"],
        "regbench.git_revision": context["git_revision"],
        "regbench.data_digest": context["data_digest"],
        "regbench.data_source": context["data_source"],
        VARIANT_TAG: variant,
        **git_tags(context["git_revision"]),
        **dvc_tags(context),
    }
    if note:
        tags[NOTE_TAG] = note
    tracker.stage_run = tracker.start(run_name(name, context), tags=tags, params=params)
    if dataset is not None:
        tracker.log_dataset(tracker.stage_run, dataset)
    return tracker.stage_run


def run_settings(run) -> dict[str, Any]:
    """A run's settings as child-run params: its grid value and every effective setting, flattened."""
    return {"grid_value": run.grid_value, **flatten(to_plain(run.params))}


class ChildRuns:
    """The MLflow child run of each run of a stage (member, repeat, fold): opened, filled and closed.

    Without a tracker (tests that do not log) every call is a no-op and ``run_id`` is None.

    When the store stops taking writes (disk full, read-only), ``failure`` keeps the one-line error,
    logging stops and training goes on: every run that finishes still goes to the stage's run store
    (regbench.train.runstore.Keeper), and the stage then ends with that line. Raising here would lose
    the runs trained together with this one (the stacked engine finishes them at once).
    """

    def __init__(
        self,
        tracker: Tracker | None,
        parent: str | None,
        context: dict[str, str],
        max_steps: int,
        dataset: dict[str, Any] | None = None,
    ):
        self.tracker, self.parent, self.context, self.max_steps = tracker, parent, context, max_steps
        self.dataset = dataset
        self.open_runs: dict[int, str] = {}
        self.closed: set[int] = set()
        self.failure: StoreUnwritable | None = None

    def _failed(self, failure: StoreUnwritable) -> None:
        if self.failure is None:
            self.failure = failure
            log.warning(
                "the MLflow store %s cannot be written: training goes on without MLflow, the stage stops at the end",
                store_location(self.tracker.uri),
            )
            # Best effort: a store that took no write will not take these either (close_stale_runs will).
            for index, run_id in self.open_runs.items():
                if index not in self.closed:
                    with contextlib.suppress(StoreUnwritable):
                        self.tracker.end(run_id, status="FAILED")

    def open(
        self, index: int, member: str, repeat: int, seed: int, fold: int | None, params: dict[str, Any]
    ) -> str | None:
        """Open run ``index`` once (per-run engines open it when it starts, stacked ones when it is done)."""
        if self.tracker is None or self.failure is not None:
            return self.open_runs.get(index)
        if index not in self.open_runs:
            name = f"{member}-r{repeat}" + (f"-f{fold}" if fold is not None else "")
            tags = {
                STAGE_TAG: self.context["stage"],
                "regbench.member": member,
                "regbench.repeat": str(repeat),
                "regbench.seed": str(seed),
                "regbench.fold": "" if fold is None else str(fold),
                **git_tags(self.context.get("git_revision", "")),
                **dvc_tags(self.context),
            }
            try:
                self.open_runs[index] = self.tracker.start(
                    run_name(name, self.context),
                    tags=tags,
                    params={"seed": seed, "repeat": repeat, "fold": fold, **params},
                    parent=self.parent,
                )
                if self.dataset is not None:
                    self.tracker.log_dataset(self.open_runs[index], self.dataset)
            except StoreUnwritable as failure:
                self._failed(failure)
        return self.open_runs.get(index)

    def close(self, index: int, history, evaluations: dict[str, float]) -> None:
        """Log the run's per-epoch history and final values, and end it (FAILED when it diverged)."""
        self.closed.add(index)
        run_id = self.open_runs.get(index)
        if self.tracker is None or self.failure is not None or run_id is None:
            return
        final = {f"final_{k}": v[-1] for k, v in history.metrics.items() if v}
        final.update(evaluations)
        try:
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
        except StoreUnwritable as failure:
            self._failed(failure)

    # As the train layer's RunObserver (regbench.train.run): the executor hands it each run.

    def on_run_started(self, index: int, run) -> None:
        self.open(index, run.member, run.repeat, run.seed, run.fold, run_settings(run))

    def on_run_finished(self, index: int, run) -> None:
        run.run_id = self.open(index, run.member, run.repeat, run.seed, run.fold, run_settings(run))
        self.close(index, run.history, run.evaluations)

    def on_failure(self, error: BaseException) -> None:
        self.abort(error)

    def abort(self, error: BaseException) -> None:
        """Any error, not only a kill, must close the open child runs: RUNNING forever misleads the UI."""
        if self.tracker is None or self.failure is not None:
            return
        for index, run_id in self.open_runs.items():
            if index not in self.closed:
                with contextlib.suppress(StoreUnwritable):
                    self.tracker.end(run_id, status="KILLED" if isinstance(error, StageKilled) else "FAILED")
