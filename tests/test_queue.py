"""Queued experiments (`dvc exp run --queue`, `dvc queue start -j 2`) keep every MLflow run, real DVC."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from tests.conftest import PipelineSpec

pytestmark = pytest.mark.pipeline


def test_two_queued_experiments_in_parallel_keep_all_runs_in_the_repositorys_store(make_pipeline):
    # No MLFLOW_TRACKING_URI (Pipeline.env): the default store must be the repository's, not DVC's temporary
    # workspace.
    pipeline = make_pipeline(PipelineSpec({"circles": ["overfit"]}, epochs=2, seeds=(0, 1), commit=True))
    repo = pipeline.repo
    names = ["queued-a", "queued-b"]
    for name, epochs in zip(names, (3, 4), strict=True):
        pipeline.dvc("exp", "run", "--queue", "-n", name, "-S", f"circles.defaults.epochs={epochs}")
    assert not (repo / "mlflow.db").exists()  # both workers create the store at once
    # Not captured: the workers it starts inherit its output, and capturing would wait for them to end.
    subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "start", "-j", "2"],
        cwd=repo,
        env=pipeline.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    try:
        deadline = time.monotonic() + 900
        while True:
            status = pipeline.dvc("queue", "status").stdout
            if status.count("Success") == 2 or "Failed" in status:
                break
            assert time.monotonic() < deadline, status
            time.sleep(3)
    finally:
        pipeline.dvc("queue", "stop", "--kill", check=False)
    logs = "\n".join(f"--- {name}:\n" + pipeline.dvc("queue", "logs", name, check=False).stdout for name in names)
    assert status.count("Success") == 2, status + "\n" + logs

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("regbench/circles")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = {run.data.tags.get("dvc.exp_name"): run for run in runs if "mlflow.parentRunId" not in run.data.tags}
    assert set(parents) == set(names)
    assert len(runs) == 2 * (1 + 2)  # a parent and two repeats per experiment
    assert {run.info.status for run in runs} == {"FINISHED"}
    children = {r.data.tags["mlflow.parentRunId"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    epochs = {
        name: len(client.get_metric_history(children[run.info.run_id].info.run_id, "val_loss"))
        for name, run in parents.items()
    }
    assert epochs == {"queued-a": 3, "queued-b": 4}
    # The run log of the repository DVC ran from (not DVC's temporary copies) names the store and each parent run.
    logged = [json.loads(line) for line in (repo / "logs/train-circles-overfit.jsonl").read_text().splitlines()]
    assert {record["DVC_EXP_NAME"]: record["mlflow"]["parent_run_id"] for record in logged} == {
        name: parent.info.run_id for name, parent in parents.items()
    }
    assert {record["mlflow"]["tracking_uri"] for record in logged} == {f"sqlite:///{(repo / 'mlflow.db').resolve()}"}
    # Their artifacts are beside that store, not in DVC's deleted temporary workspace (issue 28).
    experiment_location = client.get_experiment_by_name("regbench/circles").artifact_location
    assert experiment_location == (repo / "mlflow-artifacts" / "regbench" / "circles").resolve().as_uri()
    assert list((repo / "mlflow-artifacts").rglob("histories.csv"))
