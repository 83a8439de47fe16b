"""A real MLflow tracking server on loopback (SQLite backend, proxied artifacts) takes a train stage's runs."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from mlflow import MlflowClient

from regbench.train import provenance
from regbench.train.tracking import GIT_COMMIT_TAG, NOTE_TAG, SOURCE_NAME_TAG, USER_TAG, read_run_log
from stages import prepare as prepare_stage
from stages import train as train_stage
from tests.conftest import REPO_ROOT, shrunk_params
from tools.browser import mlflow_ui


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 (SQLite backend, proxied artifacts), stopped by its own process group."""
    directory = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_ui(
        f"sqlite:///{directory / 'server.db'}",
        log=directory / "server.log",
        subcommand="server",
        extra_args=("--artifacts-destination", str(directory / "artifacts")),
    ) as running:
        yield running.url, directory


def test_a_train_stage_logs_runs_metrics_and_artifacts_to_a_tracking_server(server, tmp_path, mirror, monkeypatch):
    url, directory = server
    raw = shrunk_params(mirror, {"circles": ["overfit"]}, epochs=3, seeds=(0, 1))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copy(REPO_ROOT / "claims.yaml", tmp_path / "claims.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.delenv("DVC_ROOT", raising=False)  # the run log goes beside this working directory
    prepare_stage.main(["circles"])
    train_stage.main(["circles-overfit"])

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("regbench/circles")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert all(run.info.status == "FINISHED" for run in runs)
    assert len(client.get_metric_history(children[0].info.run_id, "val_loss")) == 3
    # Artifacts go through the server (proxied) into its artifact destination, not to a local path.
    assert "histories.csv" in {item.path for item in client.list_artifacts(parents[0].info.run_id)}
    assert list((directory / "artifacts").rglob("histories.csv"))
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    # MLflow's standard fields on every run (Source, User, commit, Description on the parent) and the dataset.
    for run in runs:
        tags = run.data.tags
        assert tags[SOURCE_NAME_TAG] == "stages/train.py" and tags[USER_TAG], run.info.run_name
        assert GIT_COMMIT_TAG in tags or provenance.git_revision() == "unknown"
        (dataset,) = run.inputs.dataset_inputs
        assert dataset.dataset.name == "circles" and len(dataset.dataset.digest) == 32
    assert parents[0].data.tags[NOTE_TAG].startswith("circles / overfit: ")
    # The manifest names the machine (CPU, instruction sets, TensorFlow's threads) but no run ids or store
    # paths: those are in the run log, which names the server and the parent run.
    manifest = json.loads((tmp_path / "results/train/circles-overfit/manifest.json").read_text())
    assert "mlflow" not in manifest and manifest["mlflow_experiment"] == "regbench/circles"
    assert manifest["machine"]["cpu_model"] and isinstance(manifest["machine"]["isa"], list)
    assert set(manifest["machine"]["tensorflow_threads"]) == {"intra_op", "inter_op"}
    (logged,) = read_run_log("train@circles-overfit")
    assert logged["mlflow"]["tracking_uri"] == url and logged["mlflow"]["parent_run_id"] == parents[0].info.run_id
    assert {run["mlflow_run_id"] for run in logged["trained"]} == {run.info.run_id for run in children}
