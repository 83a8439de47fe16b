"""Nothing lost: the MLflow store under DVC's temporary workspaces, concurrent writers, kills, bad input."""

from __future__ import annotations

import copy
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from mlflow import MlflowClient

from regbench import config, io
from regbench.claims import evaluate, schema, verdict
from regbench.data import fetch
from regbench.schema import ParamsError
from regbench.train import provenance, records, tracking
from regbench.train.run import History
from stages import claims as claims_stage
from stages import fetch as fetch_stage
from stages import prepare as prepare_stage
from stages import report as report_stage
from stages import train as train_stage
from tests.conftest import REPO_ROOT, real_params, shrunk_params, write_params


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- where the store is ------------------------------------------------------------------------


def test_default_store_is_in_the_repository_dvc_was_run_from(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc"
    workspace.mkdir(parents=True)
    monkeypatch.chdir(workspace)
    # A queued or --temp experiment: DVC_ROOT names the originating repository, not the temporary copy.
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}"
    monkeypatch.delenv("DVC_ROOT")
    assert tracking.tracking_uri() == f"sqlite:///{workspace / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri() == "http://127.0.0.1:5999"


# --- many writers, one store -------------------------------------------------------------------


def _open_tracker(uri: str, barrier, results) -> None:
    barrier.wait()
    try:
        results.put(tracking.Tracker("regbench/race", uri=uri).experiment_id)
    except Exception as error:  # reported to the test, which names it
        results.put(f"{type(error).__name__}: {error}")


def test_two_processes_create_a_new_store_and_experiment_at_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    for round_ in range(3):
        uri = f"sqlite:///{tmp_path / f'round{round_}' / 'mlflow.db'}"
        barrier, results = context.Barrier(2), context.Queue()
        workers = [context.Process(target=_open_tracker, args=(uri, barrier, results)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        ids = [results.get(timeout=5) for _ in workers]
        assert ids[0] == ids[1] and ids[0].isdigit(), ids
        assert len(MlflowClient(uri).search_experiments(filter_string="name = 'regbench/race'")) == 1


def test_stale_cleanup_closes_only_runs_whose_owner_is_gone(tmp_path):
    tracker = tracking.Tracker("regbench/stale", uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    stage = {tracking.STAGE_TAG: "train@x"}
    alive = tracker.start("alive", tags=stage, params={})  # owned by this (live) process
    dead = tracker.start("dead", tags={**stage, tracking.OWNER_TAGS[1]: str(dead_pid())}, params={})
    remote = tracker.start("remote", tags={**stage, tracking.OWNER_TAGS[0]: "another-host"}, params={})
    legacy = tracker.client.create_run(tracker.experiment_id, run_name="legacy", tags=stage).info.run_id
    assert tracker.close_stale_runs("train@x") == 2
    status = {run: tracker.client.get_run(run).info.status for run in (alive, dead, remote, legacy)}
    assert status == {alive: "RUNNING", dead: "KILLED", remote: "RUNNING", legacy: "KILLED"}
    assert socket.gethostname() == tracker.client.get_run(alive).data.tags[tracking.OWNER_TAGS[0]]


# --- kills ---------------------------------------------------------------------------------------


def test_leftovers_of_a_dead_writer_are_removed_and_a_live_writers_kept(tmp_path):
    target = tmp_path / "circles-overfit"
    gone = tmp_path / f".circles-overfit.p{dead_pid()}.x1y2.part"
    (gone / "sub").mkdir(parents=True)
    (gone / "sub" / "histories.csv").write_text("half")
    live = tmp_path / f".circles-overfit.p{os.getpid()}.z3.part"
    live.mkdir()
    other = tmp_path / f".circles-overfit_grid.p{dead_pid()}.q.part"  # another target's: not ours to judge
    other.mkdir()
    with io.atomic_directory(target) as out:
        (out / "a.txt").write_text("done")
    assert not gone.exists() and live.exists() and other.exists()
    assert (target / "a.txt").read_text() == "done"
    assert [p.name for p in tmp_path.glob(".circles-overfit.p*.part")] == [live.name]


# The child writes "new" over a target holding "old" and SIGKILLs itself at one step of the swap:
# "block" while writing, or before the n-th os.rename / shutil.rmtree of the replacement (0: the old
# directory aside, 1: the new one in, 2: deleting the old one).
SWAP_KILLER = """
import os, shutil, signal, sys
from pathlib import Path
from regbench import io

target, kill_at = Path(sys.argv[1]), sys.argv[2]
steps = []

def killing(real):
    def step(*args, **kwargs):
        if str(len(steps)) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        steps.append(real.__name__)
        return real(*args, **kwargs)
    return step

os.rename, shutil.rmtree = killing(os.rename), killing(shutil.rmtree)
with io.atomic_directory(target) as out:
    (out / "data.txt").write_text("new")
    if kill_at == "block":
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize(("kill_at", "survivor"), [("block", "old"), ("0", "old"), ("1", "old"), ("2", "new")])
def test_a_kill_at_any_step_of_replacing_a_directory_loses_neither_copy(tmp_path, kill_at, survivor):
    target = tmp_path / "circles-overfit"
    target.mkdir()
    (target / "data.txt").write_text("old")
    child = subprocess.run([sys.executable, "-c", SWAP_KILLER, str(target), kill_at], cwd=REPO_ROOT)
    assert child.returncode == -9
    if kill_at == "1":  # killed between the renames: the old directory is aside, whole
        assert not target.exists()
        (aside,) = tmp_path.glob(".circles-overfit.p*.old.part")
        assert (aside / "data.txt").read_text() == "old"
    # The next writer, which fails itself, finds the survivor back in place and leaves nothing else.
    with pytest.raises(RuntimeError), io.atomic_directory(target) as out:
        assert (target / "data.txt").read_text() == survivor  # what the run store would reuse from
        (out / "data.txt").write_text("failed")
        raise RuntimeError("a failing writer")
    assert (target / "data.txt").read_text() == survivor
    assert [path.name for path in tmp_path.iterdir()] == ["circles-overfit"]


def repo_with_one_stage(repo: Path, *stage: str):
    """A git + DVC repository with this project's .dvcignore and one stage (``dvc stage add`` arguments),
    reproduced once; returns its ``dvc status --json``, as a function."""
    shutil.copy(REPO_ROOT / ".dvcignore", repo / ".dvcignore")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc_ = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc_, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*dvc_, "stage", "add", "-q", *stage], cwd=repo, check=True)
    subprocess.run([*dvc_, "repro", "-q"], cwd=repo, check=True, capture_output=True)

    def status() -> dict:
        result = subprocess.run([*dvc_, "status", "--json"], cwd=repo, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    return status


def test_dvc_status_ignores_temporary_outputs_inside_a_tracked_directory(tmp_path):
    """Writers leave `.<name>.p<pid>.<random>.part` files and folders (a kill, or a live writer of a parallel
    queue); inside a tracked output they must not change its hash, which is what .dvcignore is for."""
    status = repo_with_one_stage(tmp_path, "-n", "write", "-o", "out", "mkdir -p out && echo data > out/run.json")
    assert status() == {}
    (tmp_path / "out" / f".run.json.p{dead_pid()}.a1b2.part").write_text("half")
    (tmp_path / "out" / f".runs.p{os.getpid()}.c3.part").mkdir()
    (tmp_path / "out" / f".runs.p{os.getpid()}.c3.part" / "x.json").write_text("{}")
    assert status() == {}
    # The same files without the ignore rule are a change: the check above can fail.
    (tmp_path / ".dvcignore").unlink()
    assert status() != {}


def test_a_code_folder_dependency_ignores_python_bytecode_caches(tmp_path):
    """The claims and report stages depend on code folders (regbench/claims): whether Python wrote its
    __pycache__ there (PYTHONDONTWRITEBYTECODE, another Python version) must not change the stage."""
    (tmp_path / "package").mkdir()
    (tmp_path / "package" / "module.py").write_text("VALUE = 1\n")
    status = repo_with_one_stage(
        tmp_path, "-n", "use", "-d", "package", "-o", "out.txt", "cp package/module.py out.txt"
    )
    assert status() == {}
    (tmp_path / "package" / "__pycache__").mkdir()
    (tmp_path / "package" / "__pycache__" / "module.cpython-311.pyc").write_bytes(b"\x00bytecode")
    assert status() == {}
    (tmp_path / ".dvcignore").unlink()  # the same cache without the rule is a change: the check above can fail
    assert status() != {}


# A stage that writes its folder as train does: whole, through io.atomic_directory.
FOLDER_WRITER = (
    "from regbench import io\n"
    "with io.atomic_directory('out') as out:\n"
    "    (out / 'runs').mkdir()\n"
    "    (out / 'runs' / 'r.json').write_text('{}')\n"
    "    (out / 'metrics.json').write_text('{}')\n"
)


def test_a_stage_run_by_hand_keeps_the_gitignore_dvc_wrote_in_its_folder(tmp_path):
    """DVC lists a folder's cached outputs in its .gitignore (train: runs/, histories.csv); replacing the
    folder whole outside DVC (`python -m stages.train <run>`) must not leave them untracked in `git status`."""
    (tmp_path / "writer.py").write_text(FOLDER_WRITER)
    command = f"PYTHONPATH={REPO_ROOT} {sys.executable} writer.py"
    stage = ["-n", "write", "-d", "writer.py", "-o", "out/runs", "-O", "out/metrics.json", command]
    assert repo_with_one_stage(tmp_path, *stage)() == {}
    assert (tmp_path / "out" / ".gitignore").read_text() == "/runs\n"
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run(["sh", "-c", command], cwd=tmp_path, check=True)  # by hand, outside DVC
    assert (tmp_path / "out" / ".gitignore").read_text() == "/runs\n"
    untracked = subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True)
    assert "runs" not in untracked.stdout, untracked.stdout


# --- stops: Ctrl-C, a parent gone --------------------------------------------------------------------

# A stage whose main waits (stands for training); it says when it has started.
SLEEPING_STAGE = """
import sys, time
sys.argv = ["stages/sleeper.py", "now"]
from regbench.cli import run_stage

def main(argv):
    print("started", flush=True)
    time.sleep(120)

run_stage(main)
"""


def test_ctrl_c_ends_a_stage_with_one_line_and_exit_code_130():
    stage = subprocess.Popen(
        [sys.executable, "-c", SLEEPING_STAGE], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert stage.stdout.readline() == "started\n"
    stage.send_signal(signal.SIGINT)
    _, stderr = stage.communicate(timeout=30)
    assert stage.returncode == 130
    assert stderr.splitlines() == ["sleeper now: stopped by SIGINT (Ctrl-C)"]


def test_a_stage_whose_parent_dies_stops_itself_and_says_why(tmp_path):
    """As `dvc repro` killed by SIGTERM alone: its stage, now an orphan, must not train on and write."""
    log = tmp_path / "stage.log"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"stage = subprocess.Popen([sys.executable, '-c', {SLEEPING_STAGE!r}], stderr=open({str(log)!r}, 'w'))\n"
            "time.sleep(120)",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout.readline() == "started\n"  # the stage's stdout is the parent's
        (stage,) = psutil.Process(parent.pid).children()
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while stage.is_running() and stage.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the orphaned stage ran on"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert log.read_text().splitlines() == [
        f"sleeper now: stopped: the process that started it (pid {parent.pid}) is gone"
    ]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl_c", "sigkill"])
def test_a_stop_keeps_the_runs_that_finished_and_the_next_run_reuses_them(tmp_path, mirror, monkeypatch, stop):
    """IMDB's runs train one at a time: those done before a Ctrl-C, or even a SIGKILL, stay in the run store."""
    seeds = tuple(range(6))
    raw = shrunk_params(mirror, {"imdb": ["original"]}, epochs=60, seeds=seeds)
    raw["train"]["stack_parts"] = 1  # one run after another
    write_params(tmp_path, raw)
    shutil.copy(REPO_ROOT / "claims.yaml", tmp_path / "claims.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    fetch_stage.main(["imdb"])
    prepare_stage.main(["imdb"])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO_ROOT)}
    # The store exists before the stage starts: MLflow creates a new SQLite store's tables without a lock, so
    # this client and the stage opening a new file at once race ("table ... already exists").
    client = MlflowClient(uri)
    client.search_experiments()
    command = [sys.executable, "-m", "stages.train", "imdb-original"]
    stage = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = "attributes.status = 'FINISHED' and tags.`regbench.stage` = 'train@imdb-original'"
    try:
        deadline = time.monotonic() + 300
        while not (
            client.get_experiment_by_name("regbench/imdb")
            and client.search_runs([client.get_experiment_by_name("regbench/imdb").experiment_id], filter_string=done)
        ):
            if stage.poll() is not None:
                raise AssertionError(f"the stage ended before a run finished:\n{stage.communicate()[1]}")
            assert time.monotonic() < deadline, "no run finished"
            time.sleep(0.2)
        stage.send_signal(stop)
        _, stderr = stage.communicate(timeout=60)
    finally:
        if stage.poll() is None:
            stage.kill()
    if stop == signal.SIGINT:
        assert stage.returncode == 130 and "Traceback" not in stderr, stderr
        assert "stopped by SIGINT (Ctrl-C)" in stderr and "finished runs kept in" in stderr, stderr
    else:
        assert stage.returncode == -signal.SIGKILL
    out = tmp_path / "results/train/imdb-original"
    kept = len(list((out / "runs").glob("*.json")))
    assert 1 <= kept < len(seeds) and not (out / "histories.csv").exists()
    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0 and f"({len(seeds) - kept} trained, {kept} reused" in rerun.stdout, rerun.stderr


def test_the_watch_covers_a_shell_that_does_not_exec_and_its_parent():
    show = "import os; from regbench.cli import watched_ancestors; print(watched_ancestors(), os.getppid())"
    # `; true` keeps the shell waiting between the two processes, as a shell that does not exec would.
    through_shell = subprocess.run(
        ["/bin/sh", "-c", f'"{sys.executable}" -c "{show}"; true'], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.split("] ")
    shell_pid = int(through_shell[1])
    assert json.loads(through_shell[0] + "]") == [shell_pid, os.getpid()]
    direct = subprocess.run([sys.executable, "-c", show], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    assert json.loads(direct.split("] ")[0] + "]") == [os.getpid()]  # this test's python is no shell


def test_tensorflow_load_notices_are_dropped_and_every_other_line_kept():
    from regbench import cli

    if cli.gpu_device_present():
        pytest.skip("with a GPU device present the CUDA driver notice is kept on purpose")
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
        "I0000 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results",
        "E0000 something that went wrong",
    ]
    script = (
        "import os\nfrom regbench.cli import quiet_tensorflow_import\nwith quiet_tensorflow_import():\n"
        + "".join(f"    os.write(2, {(line + chr(10)).encode()!r})\n" for line in lines)
        + "os.write(2, b'after\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.stderr.splitlines() == ["E0000 something that went wrong", "after"]


def test_the_environment_check_names_what_is_missing(tmp_path):
    from regbench import environment

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["numpy>=1.26,<3", "no-such-distribution-here>=1 ; python_version>\'3\'"]\n'
    )
    assert environment.missing_distributions(pyproject) == ["no-such-distribution-here"]
    assert environment.missing_distributions() == []  # this environment has every declared dependency
    message = environment.wrong_environment_message(["numpy"])
    assert "lacks numpy" in message and "`source .venv/bin/activate`" in message and "`dvc checkout`" in message


def test_a_stage_under_a_python_without_the_projects_packages_exits_with_the_message():
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None or subprocess.run([system, "-c", "import numpy, psutil"], capture_output=True).returncode == 0:
        pytest.skip("no system python3 that lacks the project's packages")
    done = subprocess.run(
        [system, "-m", "stages.train", "circles-overfit"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: this stage runs under {system}, which is not the project's Python")
    assert "Traceback" not in done.stderr and "`./run.sh repro`" in done.stderr


# --- bad input -----------------------------------------------------------------------------------


def test_yaml_1e4_is_named_as_text_with_the_fix():
    raw = copy.deepcopy(real_params())
    raw["imdb"]["variants"]["bigger"]["optimizer"] = {"name": "rmsprop", "learning_rate": "1e4"}
    with pytest.raises(ParamsError, match=r"learning_rate = '1e4': must be a number; YAML reads 1e4 as text"):
        config.parse(raw)


def test_momentum_for_an_optimizer_without_one_is_refused():
    raw = copy.deepcopy(real_params())
    raw["imdb"]["variants"]["original"] = {"optimizer": {"name": "rmsprop", "learning_rate": 0.001, "momentum": 0.9}}
    with pytest.raises(ParamsError, match=r"imdb.variants.original.optimizer = .*only sgd takes a momentum"):
        config.parse(raw)
    # Inherited from sonar's SGD defaults by a variant that switches to Adam: the message says how to clear it.
    raw = copy.deepcopy(real_params())
    raw["sonar"]["variants"]["adam"] = {"optimizer": {"name": "adam", "learning_rate": 0.001}}
    with pytest.raises(ParamsError, match="set momentum: 0 where a variant inherits it"):
        config.parse(raw)


def test_the_same_data_from_mirrors_at_two_paths_records_the_same_origin(tmp_path, mirror):
    params = config.parse(real_params()).fetch
    records = []
    for name in ("one", "two"):
        copy_dir = tmp_path / name / "mirror"
        copy_dir.mkdir(parents=True)
        (copy_dir / "sonar.all-data").write_bytes((mirror / "sonar.all-data").read_bytes())
        dataset = params.datasets["sonar"]
        source = dataset.sources["uci"]
        with io.atomic_path(tmp_path / name / "sonar.all-data") as temporary:
            records.append(fetch._obtain(source, temporary, params, copy_dir))
    assert records == ["mirror:sonar.all-data", "mirror:sonar.all-data"]


def test_a_missing_mirror_directory_is_named(tmp_path, monkeypatch):
    raw = copy.deepcopy(real_params())
    raw["fetch"].update(retries=0, timeout_s=1)
    # Nothing listens on the discard port of loopback: the download fails at once, as offline.
    raw["fetch"]["datasets"]["sonar"]["sources"]["uci"]["url"] = "http://127.0.0.1:9/sonar"
    params = config.parse(raw).fetch
    monkeypatch.setenv(fetch.MIRROR_ENV, str(tmp_path / "no-such-dir"))
    named = r"no-such-dir \(from REGBENCH_MIRROR=.*\) does not exist: fix the path"
    with pytest.raises(fetch.Unreachable, match=named):
        fetch.fetch_dataset("sonar", params.datasets["sonar"], params, tmp_path / "out", tmp_path)


# --- what produced a result ----------------------------------------------------------------------


def test_machine_records_cpu_model_instruction_sets_and_kernel_settings(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f\n")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    # As in a stage that trained: the thread settings are recorded only once TensorFlow is loaded, which
    # otherwise depends on which tests ran before in this process.
    import tensorflow  # noqa: F401

    described = provenance.machine(cpuinfo)
    assert described["cpu_model"] == "Test CPU 9000"
    assert described["isa"] == ["sse4_2", "avx", "avx2", "fma", "avx512f"]
    # The settings that change TensorFlow's kernels or their order of summation.
    assert described["kernel_env"]["TF_ENABLE_ONEDNN_OPTS"] == described["onednn"] == "0"
    assert set(described["tensorflow_threads"]) == {"intra_op", "inter_op"}


# --- claims.yaml ---------------------------------------------------------------------------------

REGISTRY_FILE = Path(__file__).resolve().parents[1] / "claims.yaml"


def write_registry(tmp_path: Path, change=None, text: str | None = None) -> Path:
    path = tmp_path / "claims.yaml"
    if text is None:
        raw = yaml.safe_load(REGISTRY_FILE.read_text())
        change(raw)
        text = yaml.safe_dump(raw, sort_keys=False)
    path.write_text(text)
    return path


def test_a_claim_naming_an_unknown_variant_is_an_error_unless_params_are_trimmed(tmp_path):
    path = write_registry(tmp_path, lambda raw: raw["claims"][2]["test"].update(variant="dropuot"))
    registry = schema.load_registry(path)
    params = config.parse(real_params())
    with pytest.raises(ParamsError, match=r"'circles.dropout_raises_test' names circles variant\(s\) dropuot"):
        evaluate.evaluate(registry, params, tmp_path / "results")
    trimmed = copy.deepcopy(real_params())
    trimmed["claims"]["on_missing_variant"] = "not_run"
    evaluation = evaluate.evaluate(registry, config.parse(trimmed), tmp_path / "results")
    assert evaluation["claims"]["circles.dropout_raises_test"]["verdict"] == verdict.NOT_RUN


def test_a_single_test_must_state_its_line(tmp_path):
    path = write_registry(tmp_path, lambda raw: raw["claims"][0]["test"].pop("line"))
    with pytest.raises(ParamsError, match=r"claims.yaml: claims\[0\].test.line = None: a single test needs the line"):
        schema.load_registry(path)


def test_claims_yaml_that_is_not_yaml_is_named_without_a_traceback(tmp_path):
    path = write_registry(tmp_path, text="claims:\n  - id: x\n    test: {kind: paired\n")
    named = r"(?s)claims.yaml is not valid YAML: fix the place named here.\n.*line 3, column 11"
    with pytest.raises(ParamsError, match=named):
        schema.load_registry(path)


@pytest.mark.parametrize("bad", ["nan", "1e400", "-inf"])
def test_a_sonar_row_that_is_not_finite_is_named_by_its_line(bad):
    from regbench.data.experiments.sonar import parse_sonar
    from tests.conftest import sonar_bytes

    lines = sonar_bytes(rows=5).decode().splitlines()
    fields = lines[3].split(",")
    fields[7] = bad
    lines[3] = ",".join(fields)
    with pytest.raises(ValueError, match=rf"sonar.all-data line 4: a feature is NaN, infinite .*'{bad}'"):
        parse_sonar("\n".join(lines).encode())


def test_prepared_arrays_must_be_finite(tmp_path):
    import numpy as np

    from regbench.data import datasets

    x = np.ones((3, 2), dtype=np.float32)
    x[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"prepared x_train has 1 NaN or infinite value\(s\), first at index \[1, 0\]"):
        datasets.save(tmp_path, {"x_train": x, "y_train": np.zeros(3, np.float32)}, {})
    assert not list(tmp_path.iterdir())


# --- divergence ----------------------------------------------------------------------------------


def history(losses, penalty=0.0, val_losses=None):
    found = History()
    for epoch, loss in enumerate(losses):
        val = loss if val_losses is None else val_losses[epoch]
        found.append({"loss": loss, "accuracy": 0.5, "val_loss": val, "val_accuracy": 0.5, "reg_loss": penalty})
    return found


def test_a_finite_loss_beyond_the_limit_counts_as_diverged_and_says_why():
    limit = records.DIVERGENCE_FACTOR * math.log(2)
    healthy = history([0.7, 0.4, 2.5, 0.1])  # an overfitting run's loss moves; 3.6 times ln 2 at most
    records.mark_divergence(healthy, classes=1)
    assert (healthy.status, healthy.diverged_epoch) == ("ok", None)
    # Grows beyond the limit at epoch 3, then the network dies and its loss reads normal again.
    blown = history([0.8, 50.0, 1.01 * limit, 0.69])
    records.mark_divergence(blown, classes=1)
    assert (blown.status, blown.diverged_epoch) == ("diverged", 3)
    assert records.divergence_reason(blown.status, blown.diverged_epoch, blown.epochs) == (
        "loss beyond 1000 times its start from epoch 3"
    )
    # A large penalty is the user's choice: part of the start, not a blow-up.
    penalized = history([3000.0, 2000.0, 900.0], penalty=800.0, val_losses=[802.0, 801.0, 800.5])
    records.mark_divergence(penalized, classes=1)
    assert penalized.status == "ok"
    # A first epoch that already blew up the weights: the penalty after it is huge, the cross-entropy too.
    first = history([5e12, 4e12], penalty=1e12, val_losses=[3e12, 2.5e12])
    records.mark_divergence(first, classes=1)
    assert (first.status, first.diverged_epoch) == ("diverged", 1)
    # Ten classes start at ln 10: the limit scales with it.
    ten = history([0.9 * records.DIVERGENCE_FACTOR * math.log(10)])
    records.mark_divergence(ten, classes=10)
    assert ten.status == "ok"
    stopped = history([0.7, 0.6])
    stopped.append({"loss": float("nan"), "accuracy": 0, "val_loss": 0, "val_accuracy": 0, "reg_loss": 0})
    assert records.divergence_reason(stopped.status, stopped.diverged_epoch, stopped.epochs) == (
        "loss NaN or infinite at epoch 3"
    )


def test_runs_that_blow_up_to_a_finite_loss_are_left_out_and_named_everywhere(tmp_path, mirror, monkeypatch):
    """The issue's case: some runs NaN, some finite but huge, some fine. Real training, MLflow, claims, report."""
    seeds = (0, 1, 2, 3, 4, 5)
    raw = shrunk_params(mirror, {"synthetic": ["baseline", "dropout"]}, epochs=8, seeds=seeds)
    # Plain SGD with momentum at 3.0: on this data most runs blow up in their first epochs, some to NaN.
    raw["synthetic"]["variants"]["baseline"]["optimizer"] = {"name": "sgd", "learning_rate": 3.0, "momentum": 0.9}
    write_params(tmp_path, raw)
    shutil.copy(REPO_ROOT / "claims.yaml", tmp_path / "claims.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    prepare_stage.main(["synthetic"])
    for variant in ("baseline", "dropout"):
        train_stage.main([f"synthetic-{variant}"])
    claims_stage.main([])
    report_stage.main([])

    out = tmp_path / "results/train/synthetic-baseline"
    runs = json.loads((out / "runs.json").read_text())
    ok = sorted(run["seed"] for run in runs if run["status"] == "ok")
    diverged = sorted(run["seed"] for run in runs if run["status"] == "diverged")
    finite = [run for run in runs if run["status"] == "diverged" and run["diverged_epoch"] <= run["epochs"]]
    assert finite and len(ok) >= 2, runs  # finite blow-ups, and repeats left to judge
    curves = records.read_histories(out / records.HISTORIES)
    for run in finite:
        own = curves[curves["seed"] == run["seed"]]
        assert own["loss"].max() > records.DIVERGENCE_FACTOR * math.log(2)  # huge, yet finite
        assert np.isfinite(own[["loss", "val_loss"]].to_numpy()).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["runs"], metrics["diverged"], metrics["repeats_ok"]) == (6, len(diverged), len(ok))

    entry = json.loads((tmp_path / "reports/claims_detail.json").read_text())["claims"]["synthetic.dropout_vs_baseline"]
    assert set(entry["repeat_ids"]) <= set(ok) and entry["diverged_repeats"] == {"baseline": diverged}
    reasons = entry["diverged_runs"]["baseline"]
    assert any(why.startswith("loss beyond 1000 times its start") for seed in reasons for why in reasons[seed])
    row = json.loads((tmp_path / "reports/claims.json").read_text())["claims"]["synthetic.dropout_vs_baseline"]
    assert row["repeats_left_out_diverged"] == len(diverged)
    report = (tmp_path / "reports/report.md").read_text()
    assert (
        f"- `synthetic-baseline`: {len(diverged)} of 6 runs diverged; {len(diverged)} of 6 repeats left out" in report
    )
    assert "only; left out because a run of theirs diverged: baseline: seed " in report
    assert "Diverged means a loss NaN or infinite, or beyond 1000 times its start" in report

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("regbench/synthetic").experiment_id
    children = client.search_runs([experiment], "tags.`regbench.stage` = 'train@synthetic-baseline'")
    children = [run for run in children if "mlflow.parentRunId" in run.data.tags]
    failed = {int(run.data.tags["regbench.seed"]): run for run in children if run.info.status == "FAILED"}
    assert sorted(failed) == diverged
    assert {failed[run["seed"]].data.tags["regbench.diverged_reason"] for run in finite} == {
        records.divergence_reason("diverged", run["diverged_epoch"], run["epochs"]) for run in finite
    }
