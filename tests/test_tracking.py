"""MLflow recording in a real SQLite store: experiment kind, parent summaries, no duplicated finals."""

import json

from mlflow import MlflowClient

from regbench.train.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    SHARED_VIEW_KEY,
    SHARED_VIEW_TAG_PREFIX,
    SUMMARY_COLUMNS,
    VARIANT_TAG,
    Tracker,
    runs_view_url,
    start_stage_run,
)
from tests.conftest import REPO_ROOT

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
