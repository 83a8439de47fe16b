"""MLflow recording in a real SQLite store: experiment kind, parent summaries, standard fields, artifact
locations, a store that cannot be written, the run log; the progress line."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from mlflow import MlflowClient

from regbench.train.progress import Progress
from regbench.train.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    GIT_COMMIT_TAG,
    NOTE_TAG,
    SHARED_VIEW_KEY,
    SHARED_VIEW_TAG_PREFIX,
    SOURCE_NAME_TAG,
    SUMMARY_COLUMNS,
    USER_TAG,
    VARIANT_TAG,
    StoreUnwritable,
    Tracker,
    append_run_log,
    artifact_location,
    read_run_log,
    run_log_path,
    runs_view_url,
    start_stage_run,
    unwritable,
)
from stages import prepare as prepare_stage
from tests.conftest import REPO_ROOT, shrunk_params

HISTORY = {"loss": [0.9, 0.5, 0.3], "val_loss": [0.8, 0.6, 0.7], "reg_loss": [0.0, 0.0, 0.0]}


def test_experiment_is_model_training_also_when_it_existed_before(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    old = client.create_experiment("regbench/old")  # a store from before the tag existed
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    for name in ("regbench/old", "regbench/new"):
        tracker = Tracker(name, uri)
        tags = client.get_experiment(tracker.experiment_id).tags
        assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
        # The shared view the runs view link opens: the summary metrics as the table's columns.
        view = json.loads(tags[SHARED_VIEW_TAG_PREFIX + SHARED_VIEW_KEY])
        assert view["selectedColumns"] == [f"metrics.`{metric}`" for metric in SUMMARY_COLUMNS]
        assert view["orderByKey"] == f"tags.`{VARIANT_TAG}`" and view["orderByAsc"] is True


def test_child_finals_that_repeat_the_last_epoch_are_not_sent_and_parent_gets_means(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker("regbench/t", uri)
    parent = tracker.start("t-base", tags={}, params={})
    child = tracker.start("base-r0", tags={}, params={}, parent=parent)
    tracker.log_history(child, HISTORY, {"final_loss": 0.3, "final_val_loss": 0.7, "test_accuracy": 0.9}, 50)
    summary = {
        "base": {"runs": 2, "status": "ok", "final_val_loss": 0.7, "final_val_loss_std": 0.1, "best_val_loss": 0.6}
    }
    tracker.log_summary(parent, summary)
    client = MlflowClient(uri)
    child_metrics = client.get_run(child).data.metrics
    assert set(child_metrics) == {"loss", "val_loss", "test_accuracy"}  # reg_loss is zero throughout
    assert [m.step for m in client.get_metric_history(child, "val_loss")] == [1, 2, 3]
    assert client.get_run(parent).data.metrics == {"final_val_loss": 0.7, "best_val_loss": 0.6}


def test_grid_members_get_one_prefix_each_on_the_parent(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker("regbench/g", uri)
    parent = tracker.start("g-grid", tags={}, params={})
    members = {f"grid[hidden_dropout={rate}]": {"grid_value": rate, "final_val_accuracy": rate} for rate in (0.0, 0.5)}
    tracker.log_summary(parent, members)
    metrics = MlflowClient(uri).get_run(parent).data.metrics
    assert metrics == {"hidden_dropout_0.0/final_val_accuracy": 0.0, "hidden_dropout_0.5/final_val_accuracy": 0.5}


def test_runs_view_url_opens_the_model_training_runs_tab_in_the_shared_summary_view():
    url = runs_view_url("http://127.0.0.1:5000/", "7")
    assert url == (
        f"http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey={SHARED_VIEW_KEY}"
    )


def test_the_summary_columns_are_metrics_every_parent_run_gets(tmp_path):
    """A column of the shared view that no parent run carries would show '-' for every variant.

    Checked on the committed metrics.json of every single-member train stage: what train logs to its
    parent run (log_summary of that summary).
    """
    tracker = Tracker("regbench/columns", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient(tracker.uri)
    stages = sorted((REPO_ROOT / "results" / "train").glob("*/metrics.json"))
    assert len(stages) > 20
    for path in stages:
        summary = json.loads(path.read_text())
        if len(summary) != 1:
            continue  # grid members' keys are prefixed, one section per member
        parent = tracker.start(path.parent.name, tags={}, params={})
        tracker.log_summary(parent, summary)
        assert set(SUMMARY_COLUMNS) <= set(client.get_run(parent).data.metrics), path.parent.name


def test_the_shared_views_sort_puts_every_parent_run_before_the_child_runs(tmp_path):
    """MLflow sorts runs without the tag last: the runs table's first page of 100 starts with every variant."""
    tracker = Tracker("regbench/sort", f"sqlite:///{tmp_path / 'mlflow.db'}")
    parents = []
    for variant in ("dropout", "baseline"):
        context = {"stage": f"train@sort-{variant}", "git_revision": "r", "data_digest": "d", "data_source": "s"}
        parents.append(start_stage_run(tracker, f"sort-{variant}", context, variant, params={}))
        for repeat in range(3):
            tracker.start(f"{variant}-r{repeat}", tags={}, params={}, parent=parents[-1])
    view = json.loads(
        tracker.client.get_experiment(tracker.experiment_id).tags[SHARED_VIEW_TAG_PREFIX + SHARED_VIEW_KEY]
    )
    order = f"{view['orderByKey']} {'ASC' if view['orderByAsc'] else 'DESC'}"
    first = tracker.client.search_runs([tracker.experiment_id], order_by=[order], max_results=2)
    assert [run.info.run_name for run in first] == ["sort-baseline", "sort-dropout"]


# --- MLflow as its users expect (issue 25) ----------------------------------------


def test_a_stage_run_has_mlflows_standard_fields_and_its_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "fussy-pony")
    tracker = Tracker("regbench/std", f"sqlite:///{tmp_path / 'mlflow.db'}")
    context = {
        "stage": "train@std-base",
        "git_revision": "0123abcd-dirty",
        "data_digest": "f" * 64,
        "data_source": "uci",
        "DVC_EXP_NAME": "fussy-pony",
    }
    dataset = {"name": "sonar", "digest": "f" * 64, "source": {"source": "uci", "url": "https://example.org/sonar"}}
    parent = start_stage_run(tracker, "std-base", context, "base", {}, "std / base: dropout=0.2; 2 seeds", dataset)
    run = tracker.client.get_run(parent)
    tags = run.data.tags
    assert tags[GIT_COMMIT_TAG] == "0123abcd" and tags["regbench.git_dirty"] == "true"
    assert tags[SOURCE_NAME_TAG] == "stages/train.py" and tags[USER_TAG]
    assert tags[NOTE_TAG] == "std / base: dropout=0.2; 2 seeds"
    # The three `dvc exp run`s of one variant are told apart in the runs list by their DVC experiment.
    assert run.info.run_name == "std-base @fussy-pony" and tags["dvc.exp_name"] == "fussy-pony"
    (logged,) = run.inputs.dataset_inputs
    assert logged.dataset.name == "sonar" and logged.dataset.digest == "f" * 32
    assert json.loads(logged.dataset.source)["content_digest"] == "f" * 64
    assert {tag.key: tag.value for tag in logged.tags} == {"mlflow.data.context": "training"}


def test_artifacts_of_a_new_experiment_live_beside_the_sqlite_store_not_in_the_working_directory(tmp_path, monkeypatch):
    """A queued or --temp `dvc exp run` works in a folder DVC deletes: <cwd>/mlruns would vanish with it."""
    store, workspace = tmp_path / "store", tmp_path / "dvc-temp-workspace"
    store.mkdir()
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    tracker = Tracker("regbench/where", uri)
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.artifact_location == (store / "mlflow-artifacts" / "regbench" / "where").as_uri()
    run = tracker.start("r", tags={}, params={})
    (workspace / "note.txt").write_text("x")
    tracker.log_artifact(run, workspace / "note.txt")
    assert list((store / "mlflow-artifacts").rglob("note.txt")) and not (workspace / "mlruns").exists()
    # A second store in the same folder gets its own artifact folder: experiment ids do not collide.
    other = Tracker("regbench/where", f"sqlite:///{store / 'other.db'}")
    assert other.client.get_experiment(other.experiment_id).artifact_location.endswith(
        "/other-artifacts/regbench/where"
    )
    assert artifact_location("http://127.0.0.1:5000", "regbench/x") is None  # a server chooses its own


def test_a_store_that_cannot_be_written_is_one_line_naming_it_and_the_fix():
    error = unwritable("sqlite:////data/mlflow.db", RuntimeError("(sqlite3.OperationalError) database or disk is full"))
    assert isinstance(error, StoreUnwritable) and "\n" not in str(error)
    assert "/data/mlflow.db" in str(error) and "free space" in str(error) and "MLFLOW_TRACKING_URI" in str(error)
    assert unwritable("sqlite:///x.db", OSError(28, "No space left on device")) is not None
    assert unwritable("sqlite:///x.db", ValueError("invalid metric name")) is None  # a bug keeps its traceback


def test_the_run_log_is_appended_beside_the_repository_dvc_ran_from(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "origin"))
    monkeypatch.chdir(tmp_path)
    append_run_log("train@a-b", {"training_seconds": 1.5})
    append_run_log("train@a-b", {"training_seconds": 2.5})
    assert run_log_path("train@a-b") == tmp_path / "origin" / "logs" / "train-a-b.jsonl"
    assert [r["training_seconds"] for r in read_run_log("train@a-b")] == [1.5, 2.5]


# --- the progress line -------------------------------------------------------------


def _percentages(text: str) -> list[int]:
    return [int(match) for match in re.findall(r"\| (\d+)% ETA", text)]


def test_progress_never_passes_100_percent_with_runs_side_by_side_or_stacked():
    """Side by side, worker 0 reports for both while worker 1's runs finish: what showed 150 % on IMDB."""
    stream = io.StringIO()
    progress = Progress("train@p", 4, stream)
    for _ in range(2):
        progress.begin("side by side", 2, runs=2)
        progress.run_done()  # worker 1's run ends first
        progress(1, {})
        progress(2, {})
        progress.run_done()
    stacked = io.StringIO()
    together = Progress("train@q", 3, stacked)
    together.begin("3 runs together", 2, runs=3)
    together(2, {})
    for _ in range(3):
        together.run_done()
    shown = _percentages(stream.getvalue()) + _percentages(stacked.getvalue())
    assert shown and max(shown) <= 100
    assert progress.fraction(2) == 1.0  # every run done and logged


def test_the_progress_eta_counts_evaluation_and_logging(monkeypatch):
    clock = iter([0.0, 0.0, 10.0, 20.0, 20.0])  # start, begin, last epoch, logged, next begin
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    progress = Progress("train@e", 2, io.StringIO())
    progress.begin("run 1", 10)
    progress(10, {})
    progress.run_done()
    progress.begin("run 2", 10)
    # Training took half of run 1's time: run 2 at its last epoch is half done, the stage three quarters.
    assert progress.fraction(10) == 0.75


def _can_mount() -> bool:
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(shutil.which("unshare") is None or not _can_mount(), reason="needs `unshare -m` to mount a tmpfs")
def test_a_full_disk_under_the_store_ends_in_one_line_and_keeps_every_trained_run(tmp_path, mirror, monkeypatch):
    """A real tmpfs, filled to 64 KiB short of full: the store fills up while the child runs are logged."""
    raw = shrunk_params(mirror, {"circles": ["overfit"]}, epochs=3, seeds=tuple(range(8)))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copy(REPO_ROOT / "claims.yaml", tmp_path / "claims.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    prepare_stage.main(["circles"])
    seed, store = tmp_path / "seed", tmp_path / "store"
    store.mkdir()
    Tracker("regbench/circles", f"sqlite:///{seed / 'mlflow.db'}")  # tables made on a disk with room
    size = 2 * 1024 * 1024
    filler = size - (seed / "mlflow.db").stat().st_size - 64 * 1024
    script = (
        f"mount -t tmpfs -o size={size} tmpfs {store} && cp {seed / 'mlflow.db'} {store}/ && "
        f"fallocate -l {filler} {store}/filler && exec {sys.executable} -m stages.train circles-overfit"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}", "PYTHONPATH": str(REPO_ROOT)}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(store / "mlflow.db") in errors[0] and "free space" in errors[0] and "MLFLOW_TRACKING_URI" in errors[0]
    assert len(list((tmp_path / "results/train/circles-overfit/runs").glob("*.json"))) == 8
    # With room again (another store), the stage trains nothing: every run is read back.
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'roomy.db'}"
    again = [sys.executable, "-m", "stages.train", "circles-overfit"]
    rerun = subprocess.run(again, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0 and "(0 trained, 8 reused" in rerun.stdout, rerun.stderr
