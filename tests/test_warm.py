"""The warm stage server (regbench/warm.py), driven for real: servers started by real stage processes.

A probe stage reports where it ran; the end-to-end tests (test_pipeline, test_kills, test_queue, test_ray) run
every DVC stage through the server as users do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from regbench import warm
from tests.conftest import REPO_ROOT
from tests.ray_cluster import namespace_unavailable

PROBE = """
import json, os, signal, sys, time
from pathlib import Path

from regbench.cli import run_stage

VERSION = {version}


def main(argv):
    report = {{"pid": os.getpid(), "ppid": os.getppid(), "preloaded": "tensorflow" in sys.modules,
              "cwd": os.getcwd(), "argv": argv, "probe": os.environ.get("DVC_PROBE"), "version": VERSION}}
    print(json.dumps(report), flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    if argv[0] == "exit":
        sys.exit(int(argv[1]))
    if argv[0] == "raise":
        raise ValueError("bad input")
    if argv[0] == "sleep":
        time.sleep(float(argv[1]))
    if argv[0] == "signal":
        os.kill(os.getpid(), signal.SIGUSR1)
    if argv[0] == "wait":
        def terminated(signum, frame):
            Path(argv[1]).write_text("terminated")
            sys.exit(7)

        signal.signal(signal.SIGTERM, terminated)
        Path(argv[1] + ".pid").write_text(str(os.getpid()))
        time.sleep(300)


if __name__ == "__main__":
    run_stage(main)
"""


def write_probe(directory: Path, version: int = 1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "probe_stage.py").write_text(PROBE.format(version=version))
    return directory


def environment(**extra: str) -> dict[str, str]:
    # The probe imports regbench from this checkout, as a stage does from its own.
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def start(
    directory: Path,
    *args: str,
    module: str = "probe_stage",
    prefix: tuple[str, ...] = (),
    preexec_fn=None,
    **extra: str,
) -> subprocess.Popen:
    command = [*prefix, sys.executable, "-m", module, *args]
    return subprocess.Popen(
        command,
        cwd=directory,
        env=environment(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )


def probe(directory: Path, *args: str, **options) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a stage (the probe unless ``module`` says otherwise) to its end: its result and its report."""
    process = start(directory, *args, **options)
    stdout, stderr = process.communicate(timeout=180)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return result, json.loads(stdout.splitlines()[0]) | {"client": process.pid}


def servers_of(directory: Path) -> list[dict]:
    return [record for record in warm.servers() if Path(record["cwd"]) == directory.resolve()]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return write_probe(tmp_path_factory.mktemp("warm") / "checkout")


def test_a_stage_runs_in_a_child_of_the_server_with_its_own_streams_directory_environment_and_status(checkout):
    first, ran = probe(checkout, "exit", "0", DVC_PROBE="one")
    assert first.returncode == 0, first.stderr
    (server,) = servers_of(checkout)
    assert ran["preloaded"] and ran["ppid"] == server["pid"] and ran["pid"] != ran["client"]
    assert ran["cwd"] == str(checkout.resolve()) and ran["argv"] == ["exit", "0"] and ran["probe"] == "one"
    assert "to stderr" in first.stderr

    second, again = probe(checkout, "exit", "3", DVC_PROBE="two")
    assert second.returncode == 3
    # DVC sets its variables per stage: the same server runs the stage, with the caller's value.
    assert again["ppid"] == server["pid"] and again["probe"] == "two"

    closed, without_stdin = probe(checkout, "exit", "0", preexec_fn=lambda: os.close(0))
    assert closed.returncode == 0 and without_stdin["ppid"] == server["pid"]

    failed, _ = probe(checkout, "raise")
    assert failed.returncode == 1 and "error: bad input" in failed.stderr

    signalled, _ = probe(checkout, "signal")
    assert signalled.returncode == -signal.SIGUSR1  # the stage process dies as its child did

    cold, alone = probe(checkout, "exit", "0", REGBENCH_WARM="0")
    assert cold.returncode == 0 and not alone["preloaded"] and alone["pid"] == alone["client"]

    assert warm.stop(under=checkout.resolve()) == [server["pid"]]  # what the tests' teardown does
    assert not psutil.pid_exists(server["pid"]) and not servers_of(checkout)


def test_an_edited_stage_is_run_as_edited_without_a_restart(checkout):
    _, before = probe(checkout, "exit", "0")
    write_probe(checkout, version=2)
    try:
        _, after = probe(checkout, "exit", "0")
    finally:
        write_probe(checkout, version=1)
    assert (before["version"], after["version"]) == (1, 2) and before["ppid"] == after["ppid"]


def test_sigterm_is_forwarded_and_sigkill_of_the_stage_process_ends_its_child(checkout, tmp_path):
    marker = tmp_path / "terminated"
    process = start(checkout, "wait", str(marker))
    child = wait_for_pid(Path(f"{marker}.pid"), process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 7 and marker.read_text() == "terminated"
    assert not psutil.pid_exists(child)

    marker = tmp_path / "killed"
    process = start(checkout, "wait", str(marker))
    child = wait_for_pid(Path(f"{marker}.pid"), process)
    process.kill()
    process.wait(timeout=60)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child):
        assert time.monotonic() < deadline, "the child trained on after its stage process was killed"
        time.sleep(0.05)
    assert not marker.exists()  # killed outright, as the stage process was
    (server,) = servers_of(checkout)
    assert psutil.Process(server["pid"]).is_running()  # the server serves the next stage
    assert probe(checkout, "exit", "0")[0].returncode == 0


def wait_for_pid(path: Path, process: subprocess.Popen) -> int:
    deadline = time.monotonic() + 180
    while not path.exists() or not path.read_text():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    return int(path.read_text())


def test_a_different_environment_or_network_namespace_gets_its_own_server(checkout):
    _, plain = probe(checkout, "exit", "0")
    _, other = probe(checkout, "exit", "0", TF_ENABLE_ONEDNN_OPTS="0")
    assert plain["ppid"] != other["ppid"]  # TensorFlow read that variable when the server imported it
    reason = namespace_unavailable()
    if reason:
        pytest.skip(reason)
    process = start(checkout, "exit", "0", prefix=("unshare", "-n"))
    stdout, stderr = process.communicate(timeout=180)
    inside = json.loads(stdout.splitlines()[0])
    assert process.returncode == 0, stderr
    assert inside["ppid"] not in (plain["ppid"], other["ppid"])
    assert os.stat(f"/proc/{inside['ppid']}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino


def test_two_stages_at_once_start_one_server_which_exits_when_idle(tmp_path):
    directory = write_probe(tmp_path / "fresh")
    processes = [start(directory, "exit", "0", REGBENCH_WARM_IDLE="3") for _ in range(2)]
    reports = [json.loads(process.communicate(timeout=180)[0].splitlines()[0]) for process in processes]
    assert all(process.returncode == 0 for process in processes)
    assert reports[0]["ppid"] == reports[1]["ppid"] and reports[0]["preloaded"]
    # A stage longer than the idle time: its end is not idleness, and the next stage finds the same server.
    _, long_stage = probe(directory, "sleep", "4", REGBENCH_WARM_IDLE="3")
    _, next_stage = probe(directory, "exit", "0", REGBENCH_WARM_IDLE="3")
    assert long_stage["ppid"] == next_stage["ppid"] == reports[0]["ppid"]
    server = psutil.Process(reports[0]["ppid"])
    (record,) = servers_of(directory)
    server.wait(timeout=30)  # idle for 3 s: it exits by itself and cleans up
    assert not servers_of(directory)
    assert not (warm.runtime_dir() / f"{record['key']}.sock").exists()


def test_without_a_place_for_the_server_the_stage_runs_in_its_own_process(checkout, tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    result, ran = probe(checkout, "exit", "0", XDG_RUNTIME_DIR=str(not_a_directory))
    assert result.returncode == 0 and not ran["preloaded"] and ran["pid"] == ran["client"]
    assert "note: running without a warm server: no place for its socket" in result.stderr


def test_a_bad_idle_setting_is_named(checkout):
    process = start(checkout, "exit", "0", REGBENCH_WARM_IDLE="soon")
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and not stdout
    assert "error: REGBENCH_WARM_IDLE must be a number of seconds; got 'soon'" in stderr


def test_a_stage_main_called_from_another_program_runs_there(checkout):
    # Like `python -m pytest` calling a stage's run_stage: handing over would rerun that other program instead.
    (checkout / "host_program.py").write_text("import probe_stage\nprobe_stage.run_stage(probe_stage.main)\n")
    result, ran = probe(checkout, "exit", "0", module="host_program")
    assert result.returncode == 0, result.stderr
    assert not ran["preloaded"] and ran["pid"] == ran["client"]
