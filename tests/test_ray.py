"""The Ray executor on a real two-node Ray cluster on loopback, driven through real DVC and MLflow.

A stage trained on the cluster gives byte-identical histories.csv to the local executor and runs
tasks on both nodes; the worker node killed mid-stage, the stage completes on the head; with
retries 0 it fails with a clear error naming the run, writes no output and closes its MLflow
runs FAILED. The cluster lives in a private network namespace (tests/ray_cluster.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import PipelineSpec, build_pipeline, dvc, stage_process, write_params
from tests.ray_cluster import LoopbackCluster, namespace_unavailable

pytestmark = pytest.mark.pipeline
# circles-dropout: 20 repeats = two stacked parts (two tasks) with dropout, whose masks are drawn per part;
# imdb-original: sparse inputs, one task per run.
STAGES = ["circles-dropout", "imdb-original"]
# Long enough for the kill to land while the worker node trains (imdb, per-run tasks).
LONG_EPOCHS = 2000


def set_params(repo: Path, change) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    change(raw)
    write_params(repo, raw)


def histories(repo: Path, stage: str) -> bytes:
    return (repo / "results/train" / stage / "histories.csv").read_bytes()


def executor_record(repo: Path, stage: str) -> dict:
    # The run log (untracked): where runs trained is a run record, not a result.
    last = (repo / "logs" / f"train-{stage}.jsonl").read_text().splitlines()[-1]
    return json.loads(last)["executor"]


def repro(cluster: LoopbackCluster, repo: Path, *stages: str) -> subprocess.Popen:
    """``dvc repro -f -s`` of the stages inside the cluster's namespace (the executor is not a stage param).

    The stages' run stores go first: their runs have the same identity on Ray, so they would be read
    back, not trained again (regbench/train/runstore.py), and nothing would reach the cluster.
    """
    for stage in stages:
        shutil.rmtree(repo / "results/train" / stage / "runs", ignore_errors=True)
    command = cluster.prefix() + [sys.executable, "-m", "dvc", "repro", "-f", "-s", *(f"train@{s}" for s in stages)]
    return subprocess.Popen(command, cwd=repo, env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mirror):
    reason = namespace_unavailable()
    if reason is not None:
        pytest.skip(f"the Ray cluster tests need a private network namespace: {reason}")
    spec = PipelineSpec(
        {"circles": ["dropout"], "imdb": ["original"]},
        epochs=3,
        change=lambda raw: raw["circles"].update(seeds=list(range(20))),
        repro=tuple(f"train@{s}" for s in STAGES),  # the local executor: the reference
    )
    saved = {key: os.environ.pop(key, None) for key in ("MLFLOW_TRACKING_URI", "REGBENCH_MIRROR", "RAY_ADDRESS")}
    repo = build_pipeline(tmp_path_factory.mktemp("ray"), mirror, spec).repo
    yield repo
    for key, value in saved.items():
        if value is not None:
            os.environ[key] = value


@pytest.fixture(scope="module")
def cluster(repo):
    cluster = LoopbackCluster()
    try:
        cluster.start_head()
        cluster.add_worker()
        yield cluster
    finally:
        cluster.stop()


def test_a_stage_on_two_ray_nodes_is_byte_identical_to_local(repo, cluster):
    local = {stage: histories(repo, stage) for stage in STAGES}
    set_params(repo, lambda raw: raw["train"].update(executor="ray"))
    process = repro(cluster, repo, *STAGES)
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 0, output
    for stage in STAGES:
        assert histories(repo, stage) == local[stage], stage
    records = {stage: executor_record(repo, stage) for stage in STAGES}
    assert [len(records[s]["tasks"]) for s in STAGES] == [2, 2]
    assert all(r["kind"] == "ray" and r["address"] == cluster.address for r in records.values())
    assert len({task["node"] for r in records.values() for task in r["tasks"]}) == 2  # both nodes trained


def _wait_for_a_task(cluster: LoopbackCluster, process: subprocess.Popen, nodes: list[int]) -> None:
    deadline = time.monotonic() + 240
    while not any(cluster.running_task(node, "regbench train@") for node in nodes):
        assert process.poll() is None, process.communicate()[0].decode()
        assert time.monotonic() < deadline, "no task ever ran"
        time.sleep(0.1)


def _kill_worker_while_it_trains(cluster: LoopbackCluster, process: subprocess.Popen) -> None:
    worker = cluster.nodes[-1]
    _wait_for_a_task(cluster, process, [worker])
    cluster.kill_node(worker)


def _last_stage_runs(repo: Path, experiment: str):
    """The parent MLflow run of the latest stage of ``experiment`` and its child runs."""
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name(f"regbench/{experiment}").experiment_id
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def test_the_worker_node_killed_mid_stage_the_stage_completes_on_the_head(repo, cluster):
    stage = "imdb-original"
    set_params(repo, lambda raw: raw["imdb"]["defaults"].update(epochs=LONG_EPOCHS))
    set_params(repo, lambda raw: raw["train"].update(executor="local"))
    dvc(repo, "repro", f"train@{stage}")
    local = histories(repo, stage)

    set_params(repo, lambda raw: raw["train"].update(executor="ray"))
    process = repro(cluster, repo, stage)
    _kill_worker_while_it_trains(cluster, process)
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 0, output
    assert histories(repo, stage) == local
    record = executor_record(repo, stage)
    assert len({task["node"] for task in record["tasks"]}) == 1  # both runs ended on the head


def test_with_no_retries_a_lost_node_fails_the_stage_clearly_and_writes_nothing(repo, cluster):
    stage = "imdb-original"
    cluster.add_worker()
    set_params(repo, lambda raw: raw["train"].update(executor="ray", ray={"max_retries": 0}))
    shutil.rmtree(repo / "results/train" / stage)
    process = repro(cluster, repo, stage)
    _kill_worker_while_it_trains(cluster, process)
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode != 0
    assert f"train@{stage}: the Ray task training original repeat" in output, output
    assert "its worker or node died and 0 retries" in output, output
    assert not list((repo / "results/train").glob(f".{stage}.*"))
    parent, children = _last_stage_runs(repo, "imdb")
    assert parent.info.status == "FAILED"
    assert len(children) == 2 and {r.info.status for r in children} <= {"FAILED", "FINISHED"}
    assert "FAILED" in {r.info.status for r in children}
    # No results; only a run that came back before the failure (the head's, if it was quicker) is kept.
    out = repo / "results/train" / stage
    kept = list((out / "runs").glob("*.json"))
    assert not out.exists() or [path.name for path in out.iterdir()] == ["runs"]
    assert len(kept) == len([r for r in children if r.info.status == "FINISHED"])


def test_sigterm_or_ctrl_c_cancels_the_outstanding_tasks(repo, cluster):
    # SIGTERM (what `kill` and DVC's queue send): ray.init replaces its handler, so this is the signal that needs
    # the stage's handler put back; Ctrl-C (SIGINT) reaches the same handler (regbench.cli.stop_on_signals).
    stage = "imdb-original"
    set_params(repo, lambda raw: raw["train"].update(executor="ray", ray={"max_retries": 3}))
    set_params(repo, lambda raw: raw["imdb"]["defaults"].update(epochs=LONG_EPOCHS))
    output_dir = repo / "results/train" / stage
    before = histories(repo, stage) if output_dir.exists() else None
    process = repro(cluster, repo, stage)
    _wait_for_a_task(cluster, process, cluster.nodes)
    driver = stage_process(process, stage)
    assert driver is not None
    driver.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode != 0, output
    deadline = time.monotonic() + 30
    while any(cluster.running_task(node, "regbench train@") for node in cluster.nodes):
        assert time.monotonic() < deadline, "a Ray task trained on after Ctrl-C"
        time.sleep(0.2)
    parent, children = _last_stage_runs(repo, "imdb")
    assert parent.info.status == "KILLED", output
    assert len(children) == 2 and {r.info.status for r in children} == {"KILLED"}
    assert (histories(repo, stage) if output_dir.exists() else None) == before  # the last good results stay
    assert not list((repo / "results/train").glob(f".{stage}.*"))


LOCAL_DRIVER = """
import json, os, stat
from regbench.train.executor import ray_session

tmp = os.environ["TMPDIR"]
with ray_session() as ray:
    assert ray.get(ray.remote(lambda: 1 + 1).remote()) == 2
    during = {name: stat.S_IMODE(os.stat(os.path.join(tmp, name)).st_mode) for name in os.listdir(tmp)}
print(json.dumps({"during": during, "after": os.listdir(tmp), "token": os.environ.get("RAY_AUTH_TOKEN")}))
"""


def test_a_local_ray_instance_leaves_nothing_behind(tmp_path):
    """A stage without RAY_ADDRESS starts a local Ray instance (executor.ray_session): its session files go
    to a private directory (mode 0700) that is removed afterwards, never to the shared <temp>/ray, and
    no token file is written to $HOME (Ray 2.59+ writes ~/.ray/auth_token for a new local instance)."""
    reason = namespace_unavailable()
    if reason is not None:
        pytest.skip(f"the Ray tests need a private network namespace: {reason}")
    home = tmp_path / "home"
    home.mkdir()
    # A short temporary directory of the driver's own (Ray's socket paths under it must fit 107 bytes).
    temp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), TMPDIR=str(temp), RAY_USAGE_STATS_ENABLED="0", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    cluster = LoopbackCluster()  # only its network namespace: the instance is the driver's own
    try:
        driver = subprocess.Popen(
            cluster.prefix() + [sys.executable, "-c", LOCAL_DRIVER],
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        cluster.nodes.append(driver.pid)  # whatever the driver left running is killed with its group
        output, errors = driver.communicate(timeout=300)
    finally:
        cluster.stop()
        leftovers = [path.name for path in temp.iterdir()]
        shutil.rmtree(temp, ignore_errors=True)
    assert driver.returncode == 0, errors
    seen = json.loads(output.strip().splitlines()[-1])
    ray_dirs = {name: mode for name, mode in seen["during"].items() if name.startswith("rbray-") or name == "ray"}
    assert list(ray_dirs.values()) == [0o700] and "ray" not in ray_dirs, seen
    assert not [name for name in seen["after"] if name.startswith("rbray-") or name == "ray"], seen
    assert not [name for name in leftovers if name.startswith("rbray-") or name == "ray"], leftovers
    assert seen["token"] is None  # the stage's own token went with its instance
    assert not (home / ".ray").exists(), list((home / ".ray").rglob("*"))
