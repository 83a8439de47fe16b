"""End to end, real DVC and MLflow: a typo, a bad download, a kill, Ctrl-C, a dead DVC or the wrong Python loses
no earlier result and says what happened."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import Pipeline, PipelineSpec, stage_process

pytestmark = pytest.mark.pipeline
RUNS = {"circles": ["overfit"], "sonar": ["baseline"]}
PIPELINE = PipelineSpec(RUNS, epochs=2, seeds=(0, 1), repro=())
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


def test_a_typo_or_a_bad_download_then_the_fix_loses_nothing(pipeline):
    repo = pipeline.repo
    before = digests(repo)
    params, registry = repo / "params.yaml", repo / "claims.yaml"

    good = edit_yaml(params, lambda raw: raw["circles"]["variants"]["overfit"].update(hidden_dropout=1.2))
    failed = pipeline.dvc("repro", check=False)
    assert failed.returncode != 0 and "circles.variants.overfit.hidden_dropout = 1.2" in failed.stderr
    assert digests(repo) == before
    params.write_text(good)

    good = edit_yaml(registry, lambda raw: raw["claims"][0]["test"].update(line="wide"))
    failed = pipeline.dvc("repro", check=False)
    assert failed.returncode != 0 and "claims.yaml" in failed.stderr
    assert digests(repo) == before
    registry.write_text(good)

    # A mirror file that fails verification: the verified copy from before stays.
    digest_key = ["fetch", "datasets", "sonar", "sources", "uci", "digest"]
    good = edit_yaml(params, lambda raw: _set(raw, digest_key, "0" * 64))
    failed = pipeline.dvc("repro", "fetch@sonar", check=False)
    assert failed.returncode != 0 and "failed verification" in failed.stderr
    assert digests(repo) == before
    params.write_text(good)

    assert "Data and pipelines are up to date" in pipeline.dvc("status").stdout
    assert digests(repo) == before


def test_a_typo_for_a_stage_whose_outputs_are_cached_then_the_fix_and_dvc_checkout_lose_nothing(pipeline):
    """prepare's outputs are not persisted (DVC deletes them before the stage validates its params) but
    cached: after the fix, `dvc checkout` restores them, and nothing else was touched."""
    repo = pipeline.repo
    before = digests(repo)
    prepared = repo / "data/prepared/sonar"
    files = {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in prepared.iterdir()}
    good = edit_yaml(repo / "params.yaml", lambda raw: raw["prepare"]["sonar"].update(folds=1))
    failed = pipeline.dvc("repro", check=False)
    assert failed.returncode != 0 and "prepare.sonar.folds = 1: must be 2 or more" in failed.stderr
    assert digests(repo) == before
    (repo / "params.yaml").write_text(good)
    pipeline.dvc("checkout")
    assert {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in prepared.iterdir()} == files
    assert "Data and pipelines are up to date" in pipeline.dvc("status").stdout


def _set(data: dict, keys: list[str], value) -> None:
    for key in keys[:-1]:
        data = data[key]
    data[keys[-1]] = value


RUNNING = "attributes.status = 'RUNNING' and tags.`regbench.stage` = 'train@circles-overfit'"


def circles_store(repo: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    return client, client.get_experiment_by_name("regbench/circles").experiment_id


def repro_in_background(pipeline: Pipeline, output=subprocess.DEVNULL, **environment: str) -> subprocess.Popen:
    """``dvc repro train@circles-overfit``, to be killed by the test.

    In a session (and process group) of its own, as a shell's foreground job: Ctrl-C is a SIGINT to that group.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train@circles-overfit"],
        cwd=pipeline.repo,
        env=pipeline.env(**environment),
        stdout=output,
        stderr=subprocess.STDOUT if output is not subprocess.DEVNULL else subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until_training(process: subprocess.Popen, client: MlflowClient, experiment: str) -> None:
    deadline = time.monotonic() + 300
    while not client.search_runs([experiment], filter_string=RUNNING):
        assert process.poll() is None and time.monotonic() < deadline, "the stage never started training"
        time.sleep(0.2)


def test_ctrl_c_stops_the_stage_with_one_line_and_130_and_keeps_the_previous_outputs(pipeline, tmp_path):
    repo = pipeline.repo
    before = digests(repo)
    good = pipeline.edit_params(lambda raw: raw["circles"]["variants"]["overfit"].update(epochs=3000))
    client, experiment = circles_store(repo)
    log = tmp_path / "repro.log"
    # Debian's sh (dash, what DVC runs a command through when SHELL is unset, as on CI) does not exec a
    # -c command and dies of the same Ctrl-C at once; dvc.yaml's `exec` keeps the stage DVC's own child.
    with log.open("w") as output:
        process = repro_in_background(pipeline, output, SHELL="/bin/sh")
    try:
        wait_until_training(process, client, experiment)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
        assert process.wait(timeout=120) != 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    printed = log.read_text()
    assert "Traceback" not in printed, printed
    assert printed.count("train circles-overfit: stopped by SIGINT (Ctrl-C)") == 1, printed
    assert "exited with 130" in printed, printed  # DVC's own line names the stage's exit code
    assert digests(repo) == before and not list((repo / "results/train").glob(".*.part"))
    stopped = client.search_runs([experiment], filter_string="tags.`regbench.stage` = 'train@circles-overfit'")
    assert "KILLED" in {run.info.status for run in stopped} and "RUNNING" not in {r.info.status for r in stopped}
    (repo / "params.yaml").write_text(good)
    assert "Data and pipelines are up to date" in pipeline.dvc("status").stdout


def test_sigterm_to_dvc_alone_stops_its_stage_before_it_writes(pipeline):
    repo = pipeline.repo
    before = digests(repo)
    good = pipeline.edit_params(lambda raw: raw["circles"]["variants"]["overfit"].update(epochs=3000))
    client, experiment = circles_store(repo)
    process = repro_in_background(pipeline)
    stage = None
    try:
        wait_until_training(process, client, experiment)
        stage = stage_process(process, "circles-overfit")
        assert stage is not None
        process.send_signal(signal.SIGTERM)  # DVC only: its stage is not signalled
        process.wait(timeout=60)
        # The stage notices its DVC is gone, stops as on its own SIGTERM, and never moves its outputs in.
        stage.wait(timeout=60)
    finally:
        if stage is not None and stage.is_running():
            stage.kill()
        if process.poll() is None:
            process.kill()
    assert digests(repo) == before and not list((repo / "results/train").glob(".*.part"))
    stopped = client.search_runs([experiment], filter_string="tags.`regbench.stage` = 'train@circles-overfit'")
    assert "KILLED" in {run.info.status for run in stopped} and "RUNNING" not in {r.info.status for r in stopped}
    (repo / "params.yaml").write_text(good)
    assert "Data and pipelines are up to date" in pipeline.dvc("status").stdout


def test_a_cpu_only_train_stage_prints_no_cuda_or_tensorflow_start_up_notices(pipeline):
    from regbench.cli import gpu_device_present

    if gpu_device_present():
        pytest.skip("a GPU device is present: there the CUDA messages are meant to show")
    # New epochs: the stage trains (TensorFlow starts its devices) rather than reusing its runs. No
    # TF_CPP_MIN_LOG_LEVEL from the test process (Pipeline.env drops it): the stage's own defaults.
    pipeline.edit_params(lambda raw: raw["circles"]["variants"]["overfit"].update(epochs=3))
    done = pipeline.dvc("repro", "train@circles-overfit")
    # The counts change from run to run: the untracked run log has them, not the manifest.
    logged = (pipeline.repo / "logs/train-circles-overfit.jsonl").read_text().splitlines()
    assert json.loads(logged[-1])["runs"]["trained"] > 0
    noise = re.compile(r"cuInit|CUDA error|cuda drivers|oneDNN|absl::InitializeLog|cpu_feature_guard")
    assert not [line for line in (done.stdout + done.stderr).splitlines() if noise.search(line)], done.stderr
    # Forced, every run read back from the run store: TensorFlow is not even imported (it printed its
    # load-time notices there when reading a run back loaded the engines).
    forced = pipeline.dvc("repro", "-f", "train@circles-overfit")
    assert "(0 trained, " in forced.stdout, forced.stdout
    assert not [line for line in (forced.stdout + forced.stderr).splitlines() if noise.search(line)], forced.stderr
    pipeline.dvc("repro")  # claims and report follow: the other tests start from an up-to-date pipeline


def test_a_stage_under_a_python_without_the_projects_packages_says_how_to_run_it(pipeline, tmp_path):
    """`.venv/bin/dvc repro` without the environment activated: DVC's `python` is the system one. DVC deletes
    prepare's (cached) outputs before it starts the stage; the message says how to run it and how to get them
    back, and `dvc checkout` does."""
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None or subprocess.run([system, "-c", "import numpy, psutil"], capture_output=True).returncode == 0:
        pytest.skip("no system python3 that lacks the project's packages")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(system)
    repo = pipeline.repo
    prepared = repo / "data/prepared/circles"
    files = {path.name: path.read_bytes() for path in prepared.iterdir()}
    env = pipeline.env(PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    command = [sys.executable, "-m", "dvc", "repro", "-f", "prepare@circles"]
    failed = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    printed = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "Traceback" not in printed and "No module named" not in printed, printed
    assert f"this stage runs under {bin_dir / 'python'}, which is not the project's Python" in printed
    assert "`./run.sh repro`" in printed and "`source .venv/bin/activate`" in printed
    assert "`dvc checkout` restores them" in printed
    assert not prepared.exists()  # what DVC removed before the stage ran
    pipeline.dvc("checkout")
    assert {path.name: path.read_bytes() for path in prepared.iterdir()} == files
    assert "Data and pipelines are up to date" in pipeline.dvc("status").stdout


def test_sigkill_while_training_leaves_nothing_behind_after_the_rerun(pipeline):
    repo = pipeline.repo
    # Long enough to be caught training; a changed param makes DVC rerun the stage.
    edit_yaml(repo / "params.yaml", lambda raw: raw["circles"]["variants"]["overfit"].update(epochs=3000))
    client, experiment = circles_store(repo)
    process = repro_in_background(pipeline)
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

    pipeline.dvc("repro")
    assert not list(repo.glob("results/train/.*.part"))
    assert "Data and pipelines are up to date" in pipeline.dvc("status").stdout
    assert {client.get_run(run.info.run_id).info.status for run in killed} == {"KILLED"}
    curves = (repo / "results/train/circles-overfit/curves.csv").read_text().splitlines()
    assert len(curves) == 1 + 3000 and json.loads((repo / "results/train/circles-overfit/metrics.json").read_text())


def test_sigkill_while_writing_outputs_keeps_the_previous_ones_and_status_clean(pipeline):
    """Killed after training, while the new outputs are written and logged: the old outputs stay in place, the
    full temporary directory is invisible to DVC, the parent run is not FINISHED, the runs trained are kept in
    the run store, and the rerun cleans up without training them again."""
    repo = pipeline.repo
    edit_yaml(repo / "params.yaml", lambda raw: raw["circles"]["variants"]["overfit"].update(epochs=300))
    before = digests(repo)
    out = repo / "results/train/circles-overfit"
    stored_before = {path.name for path in (out / "runs").iterdir()}
    client, experiment = circles_store(repo)
    process = repro_in_background(pipeline)
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
    # The runs trained went into the run store as they finished (regbench.train.runstore.Keeper), beside the old.
    trained = {path.name for path in (out / "runs").iterdir()} - stored_before
    assert len(trained) == 2 and stored_before <= {path.name for path in (out / "runs").iterdir()}
    # The full leftover changes nothing DVC sees: the stage whose params changed is out of date, and what reads
    # its results, since its run store grew.
    assert set(json.loads(pipeline.dvc("status", "--json").stdout)) == {"train@circles-overfit", "claims", "report"}

    assert "train@circles-overfit: 2 runs (0 trained, 2 reused" in pipeline.dvc("repro").stdout
    assert not list(repo.glob("results/train/.*.part"))
    assert "Data and pipelines are up to date" in pipeline.dvc("status").stdout
    assert {client.get_run(run.info.run_id).info.status for run in killed} == {"KILLED"}
    assert len((out / "curves.csv").read_text().splitlines()) == 1 + 300


def test_the_same_data_from_a_mirror_at_another_path_hashes_the_same(pipeline, mirror, tmp_path):
    repo = pipeline.repo
    lock = (repo / "dvc.lock").read_text()
    elsewhere = tmp_path / "another" / "mirror"
    shutil.copytree(mirror, elsewhere)
    pipeline.dvc("repro", "--force", "fetch@sonar", REGBENCH_MIRROR=str(elsewhere))
    assert json.loads((repo / "data/raw/sonar/source.json").read_text())["origin"] == "mirror:sonar.all-data"
    assert (repo / "dvc.lock").read_text() == lock  # the same DVC hashes
    assert "Data and pipelines are up to date" in pipeline.dvc("status").stdout
