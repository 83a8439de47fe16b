"""Shared start-up for the stage entry points: logging, quiet TensorFlow, clean stops, a clean exit on errors."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import select
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from regbench.schema import ParamsError

REPO_ROOT = Path.cwd()
SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "mksh", "fish"}


class Stopped(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM arrived: unwind (``finally`` blocks close runs, drop temporaries) and stop.

    A BaseException, as KeyboardInterrupt: ``except Exception`` in library code must not swallow it.
    """

    def __init__(self, signum: int, reason: str = ""):
        self.signum = signum
        self.reason = reason or f"stopped by {signal.Signals(signum).name}" + (
            " (Ctrl-C)" if signum == signal.SIGINT else ""
        )
        super().__init__(self.reason)


def run_stage(main: Callable[[list[str]], None]) -> None:
    """Run a stage's ``main``; expected failures end with one clear message and exit code 1.

    A stop (Ctrl-C, SIGTERM, or the DVC that started the stage gone) ends with one line and 128 + the signal
    number, as a shell reports a process killed by it: 130 for Ctrl-C, 143 for SIGTERM.
    """
    quiet_tensorflow_logs()
    stage = " ".join([Path(sys.argv[0]).stem, *sys.argv[1:]])
    try:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        with stop_on_signals(), stop_when_parent_exits():
            main(sys.argv[1:])
    except Stopped as stop:
        print(f"{stage}: {stop.reason}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:  # a SIGINT before the handler was in place
        print(f"{stage}: stopped by SIGINT (Ctrl-C)", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except (ParamsError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Stopped`` in the main thread (as KeyboardInterrupt would for SIGINT alone)."""

    def handler(signum, frame):
        raise Stopped(signum, _parent_gone.get(signum, ""))

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# Set by the parent watch just before it sends SIGTERM to its own process: the reason the stop line gives.
_parent_gone: dict[int, str] = {}


def watched_ancestors(pid: int | None = None) -> list[int]:
    """The processes whose exit means nobody waits for this stage any more: its parent, and when that parent
    is a shell, the shell's parent too.

    DVC starts a stage as ``$SHELL -c "<cmd>"`` (``/bin/sh`` when SHELL is unset). dvc.yaml's commands
    begin with ``exec`` so that the stage replaces the shell, as bash does by itself but Debian's sh (dash)
    does not: a shell left between them dies of a Ctrl-C at once, and DVC then reports its -2 and returns
    while the stage is still stopping. A command run without ``exec`` keeps such a shell, which lives on when
    DVC is killed, so the shell's parent is watched as well.
    """
    parent = os.getppid() if pid is None else _proc_stat(pid)[1]
    watched = [parent]
    name, grandparent = _proc_stat(parent)
    if name in SHELLS and grandparent > 1:
        watched.append(grandparent)
    return watched


def _proc_stat(pid: int) -> tuple[str, int]:
    """A process' command name and parent pid, from /proc (Linux); ('', 0) when unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", 0
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ')'.
    name = text[text.index("(") + 1 : text.rindex(")")]
    return name, int(text[text.rindex(")") + 2 :].split()[1])


@contextlib.contextmanager
def stop_when_parent_exits() -> Iterator[None]:
    """Stop this stage (SIGTERM to itself, so it unwinds as on any SIGTERM) when its DVC exits first.

    SIGTERM to `dvc repro` ends DVC at once but not the stage it runs, which would train on and write its
    outputs with no DVC left to record them. PR_SET_PDEATHSIG is not used: it fires when the parent *thread*
    that started the stage exits (not the process), it sees only the direct parent (the shell, when the shell
    does not exec), and its signal cannot say why. A pidfd (Linux 5.3+) per watched process turns readable
    when that process exits; a thread waits on them without polling.
    """
    if not hasattr(os, "pidfd_open"):
        yield  # not Linux: no watch
        return
    pidfds = {}
    for pid in watched_ancestors():
        with contextlib.suppress(OSError):
            pidfds[os.pidfd_open(pid)] = pid
    wake_read, wake_write = os.pipe()

    def watch() -> None:
        readable, _, _ = select.select([*pidfds, wake_read], [], [])
        gone = [pidfds[fd] for fd in readable if fd in pidfds]
        if gone:
            _parent_gone[signal.SIGTERM] = f"stopped: the process that started it (pid {gone[0]}) is gone"
            os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=watch, name="stop-when-parent-exits", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        os.write(wake_write, b"x")
        watcher.join()
        for fd in [*pidfds, wake_read, wake_write]:
            os.close(fd)


def gpu_device_present() -> bool:
    """Whether the kernel exposes a GPU: NVIDIA's device nodes, or WSL2's paravirtual /dev/dxg."""
    return bool(glob.glob("/dev/nvidia*")) or os.path.exists("/dev/dxg")


def quiet_tensorflow_logs() -> None:
    """TensorFlow's C++ log level, before anything imports TensorFlow; the user's own setting wins.

    Level 2 hides TensorFlow's INFO and WARNING lines. Without a GPU device node no CUDA call can succeed,
    so level 3 also hides the ERROR "failed call to cuInit: CUDA error" every stage printed on a CPU-only
    machine; with a GPU device present that error means a broken driver and stays visible.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if gpu_device_present() else "3")


# Printed while TensorFlow's libraries load, before its logging is set up, so no log level hides them.
IMPORT_NOTICES = (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"cpu_feature_guard|To enable the following instructions: .* rebuild TensorFlow",
)
# Only noise where there is no GPU to drive; with one present it says the CUDA libraries are missing.
NO_GPU_NOTICES = (r"Could not find cuda drivers on your machine",)


@contextlib.contextmanager
def quiet_tensorflow_import() -> Iterator[None]:
    """Import TensorFlow (and Keras) inside this block: its load-time notices are dropped, all else kept.

    The notices are written to file descriptor 2 by C++ code, so sys.stderr cannot filter them: the
    descriptor points at a temporary file for the block, and afterwards every line that is not a known
    notice is written to the real stderr.
    """
    noise = re.compile("|".join(IMPORT_NOTICES + (() if gpu_device_present() else NO_GPU_NOTICES)))
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines() if not noise.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def one_argument(argv: list[str], choices, what: str) -> str:
    if len(argv) != 1 or argv[0] not in choices:
        raise ValueError(f"expected one {what} argument, one of {sorted(choices)}; got {argv}")
    return argv[0]


def no_arguments(argv: list[str], stage: str) -> None:
    if argv:
        raise ValueError(f"the {stage} stage takes no arguments; got {argv}")
