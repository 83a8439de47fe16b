"""A real MLflow tracking server on loopback (SQLite backend, proxied artifacts) takes a train stage's runs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from stages import prepare as prepare_stage
from stages import train as train_stage
from tests.conftest import REPO_ROOT, shrunk_params


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1, stopped by its own process group whatever happens."""
    directory = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{directory / 'server.db'}",
        "--artifacts-destination",
        str(directory / "artifacts"),
    ]
    log = (directory / "server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{(directory / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url, directory
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


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
