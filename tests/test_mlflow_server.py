"""A real MLflow tracking server on loopback (SQLite backend, proxied artifacts) takes a train stage's runs."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from mlflow import MlflowClient

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
    # The manifest names the store it logged to, and the machine: CPU, instruction sets, TensorFlow's threads.
    manifest = json.loads((tmp_path / "results/train/circles-overfit/manifest.json").read_text())
    assert manifest["mlflow"]["tracking_uri"] == url and manifest["mlflow"]["parent_run_id"] == parents[0].info.run_id
    assert manifest["machine"]["cpu_model"] and isinstance(manifest["machine"]["isa"], list)
    assert set(manifest["machine"]["tensorflow_threads"]) == {"intra_op", "inter_op"}
