"""End to end, real DVC and MLflow: a typo, a bad download or a SIGKILL loses no earlier result."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import copy_repo, dvc, dvc_env, shrunk_params, stage_process, write_params

pytestmark = pytest.mark.pipeline
RUNS = {"circles": ["overfit"], "sonar": ["baseline"]}
OUTPUTS = [
    "data/raw/sonar/sonar.all-data",
    "data/raw/sonar/source.json",
    *(f"results/train/circles-overfit/{name}" for name in ("histories.csv", "runs.json", "manifest.json")),
    *(f"results/train/circles-overfit/{name}" for name in ("metrics.json", "curves.csv")),
    "reports/claims.json",
    "reports/claims_detail.json",
]


def digests(repo: Path) -> dict[str, str]:
    return {name: hashlib.md5((repo / name).read_bytes()).hexdigest() for name in OUTPUTS}


def edit_yaml(path: Path, change) -> str:
    """Apply ``change`` to the YAML file; return its former text (to put back)."""
    before = path.read_text()
    data = yaml.safe_load(before)
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return before


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mirror):
    repo = copy_repo(tmp_path_factory.mktemp("kills"))
    write_params(repo, shrunk_params(mirror, RUNS, epochs=2, seeds=(0, 1)))
    saved = {key: os.environ.pop(key, None) for key in ("MLFLOW_TRACKING_URI", "REGBENCH_MIRROR")}
    dvc(repo, "repro")
    yield repo
    for key, value in saved.items():
        if value is not None:
            os.environ[key] = value


def test_a_typo_or_a_bad_download_then_the_fix_loses_nothing(repo):
    before = digests(repo)
    params, registry = repo / "params.yaml", repo / "claims.yaml"

    good = edit_yaml(params, lambda raw: raw["circles"]["variants"]["overfit"].update(hidden_dropout=1.2))
    failed = dvc(repo, "repro", check=False)
    assert failed.returncode != 0 and "circles.variants.overfit.hidden_dropout = 1.2" in failed.stderr
    assert digests(repo) == before
    params.write_text(good)

    good = edit_yaml(registry, lambda raw: raw["claims"][0]["test"].update(line="wide"))
    failed = dvc(repo, "repro", check=False)
    assert failed.returncode != 0 and "claims.yaml" in failed.stderr
    assert digests(repo) == before
    registry.write_text(good)

    # A mirror file that fails verification: the verified copy from before stays.
    digest_key = ["fetch", "datasets", "sonar", "sources", "uci", "digest"]
    good = edit_yaml(params, lambda raw: _set(raw, digest_key, "0" * 64))
    failed = dvc(repo, "repro", "fetch@sonar", check=False)
    assert failed.returncode != 0 and "failed verification" in failed.stderr
    assert digests(repo) == before
    params.write_text(good)

    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
    assert digests(repo) == before


def test_a_typo_for_a_stage_whose_outputs_are_cached_then_the_fix_and_dvc_checkout_lose_nothing(repo):
    """prepare's outputs are not persisted (DVC deletes them before the stage validates its params) but
    cached: after the fix, `dvc checkout` restores them, and nothing else was touched."""
    before = digests(repo)
    prepared = repo / "data/prepared/sonar"
    files = {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in prepared.iterdir()}
    good = edit_yaml(repo / "params.yaml", lambda raw: raw["prepare"]["sonar"].update(folds=1))
    failed = dvc(repo, "repro", check=False)
    assert failed.returncode != 0 and "prepare.sonar.folds = 1: must be 2 or more" in failed.stderr
    assert digests(repo) == before
    (repo / "params.yaml").write_text(good)
    dvc(repo, "checkout")
    assert {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in prepared.iterdir()} == files
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout


def _set(data: dict, keys: list[str], value) -> None:
    for key in keys[:-1]:
        data = data[key]
    data[keys[-1]] = value


RUNNING = "attributes.status = 'RUNNING' and tags.`regbench.stage` = 'train@circles-overfit'"


def circles_store(repo: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    return client, client.get_experiment_by_name("regbench/circles").experiment_id


def repro_in_background(repo: Path, **environment: str) -> subprocess.Popen:
    """``dvc repro train@circles-overfit``, to be killed by the test."""
    return subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train@circles-overfit"],
        cwd=repo,
        env={**dvc_env(), **environment},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkill_while_training_leaves_nothing_behind_after_the_rerun(repo):
    # Long enough to be caught training; a changed param makes DVC rerun the stage.
    edit_yaml(repo / "params.yaml", lambda raw: raw["circles"]["variants"]["overfit"].update(epochs=3000))
    client, experiment = circles_store(repo)
    process = repro_in_background(repo)
    try:
        deadline = time.monotonic() + 300
        while not client.search_runs([experiment], filter_string=RUNNING):
            assert process.poll() is None and time.monotonic() < deadline, "the stage never started training"
            time.sleep(0.2)
        stage = stage_process(process, "circles-overfit")
        assert stage is not None
        stage.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) != 0
        assert not stage.is_running()
    finally:
        if process.poll() is None:
            process.kill()
    assert list((repo / "results/train").glob(".circles-overfit.*.part"))  # what the kill left
    killed = client.search_runs([experiment], filter_string=RUNNING)
    assert killed

    dvc(repo, "repro")
    assert not list(repo.glob("results/train/.*.part"))
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
    assert {client.get_run(run.info.run_id).info.status for run in killed} == {"KILLED"}
    curves = (repo / "results/train/circles-overfit/curves.csv").read_text().splitlines()
    assert len(curves) == 1 + 3000 and json.loads((repo / "results/train/circles-overfit/metrics.json").read_text())


def test_sigkill_while_writing_outputs_keeps_the_previous_ones_and_status_clean(repo):
    """Killed after training, while the new outputs are written and logged: the old outputs stay in place, the
    full temporary directory is invisible to DVC, the parent run is not FINISHED, and the rerun cleans up."""
    edit_yaml(repo / "params.yaml", lambda raw: raw["circles"]["variants"]["overfit"].update(epochs=300))
    before = digests(repo)
    out = repo / "results/train/circles-overfit"
    client, experiment = circles_store(repo)
    process = repro_in_background(repo)
    try:
        deadline, stage = time.monotonic() + 300, None
        # The manifest is the last file the stage writes before it logs its summary, histories and
        # learning-curve figure to MLflow and moves the directory into place: stop it right there.
        while not list(out.parent.glob(".circles-overfit.p*.part/manifest.json")):
            assert process.poll() is None and time.monotonic() < deadline, "the stage never wrote its outputs"
            stage = stage or stage_process(process, "circles-overfit")
            time.sleep(0.01)
        stage = stage or stage_process(process, "circles-overfit")
        assert stage is not None
        stage.suspend()
        assert digests(repo) == before  # caught while writing: the new outputs are not in place yet
        stage.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) != 0
    finally:
        if process.poll() is None:
            process.kill()
    (left,) = out.parent.glob(".circles-overfit.p*.part")
    assert {"histories.csv", "runs.json", "manifest.json", "metrics.json", "curves.csv"} <= {
        path.name for path in left.iterdir()
    }
    assert digests(repo) == before
    killed = client.search_runs([experiment], filter_string=RUNNING)
    assert len([run for run in killed if "mlflow.parentRunId" not in run.data.tags]) == 1  # not FINISHED
    # The full leftover changes nothing DVC sees: only the stage whose params changed is out of date.
    assert set(json.loads(dvc(repo, "status", "--json").stdout)) == {"train@circles-overfit"}

    dvc(repo, "repro")
    assert not list(repo.glob("results/train/.*.part"))
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
    assert {client.get_run(run.info.run_id).info.status for run in killed} == {"KILLED"}
    assert len((out / "curves.csv").read_text().splitlines()) == 1 + 300


def test_the_same_data_from_a_mirror_at_another_path_hashes_the_same(repo, mirror, tmp_path, monkeypatch):
    lock = (repo / "dvc.lock").read_text()
    elsewhere = tmp_path / "another" / "mirror"
    shutil.copytree(mirror, elsewhere)
    monkeypatch.setenv("REGBENCH_MIRROR", str(elsewhere))
    dvc(repo, "repro", "--force", "fetch@sonar")
    assert json.loads((repo / "data/raw/sonar/source.json").read_text())["origin"] == "mirror:sonar.all-data"
    assert (repo / "dvc.lock").read_text() == lock  # the same DVC hashes
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
