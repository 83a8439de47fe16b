"""Warm stage processes: a server that has already imported TensorFlow, Keras and MLflow forks each stage.

Why: a stage process spends 4-5 s importing Keras with TensorFlow and MLflow's SQL store before it trains a
few seconds of circles or sonar, and a full ``dvc repro`` starts about forty of them. The first stage of a
checkout starts a server (``python -m regbench.warm serve``) that imports those libraries once and then waits
on a Unix socket. Every stage process (``python -m stages.<stage>``, what DVC runs and what the kill tests
see) connects, hands over its standard streams, working directory, environment and arguments, and waits;
the server forks a child that runs the stage module exactly as ``python -m`` would. The stage process then
relays what happens to the child in both directions:

- SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the stage process are forwarded to the child, and Ctrl-Z
  (SIGTSTP) and SIGCONT suspend and resume it; SIGKILL closes the connection, and the server then kills the
  child's process group at once, so nothing trains on without the process DVC started.
- The child's exit status becomes the stage process' own, a death by signal included.

Only third-party libraries are imported by the server; ``regbench`` and ``stages`` are imported afresh in
every child, so an edited stage needs no restart. What the imported libraries saw when they were loaded is
the server's key: the interpreter, ``sys.path`` and the mtimes of its installed-package directories, the
environment (but the variables DVC and shells change per command), the Linux namespaces (a stage inside
``unshare -n`` never reaches a server outside it) and this file. A different key is a different server.
A server exits after ``REGBENCH_WARM_IDLE`` seconds (default 120) without a stage; ``REGBENCH_WARM=0``
turns the whole mechanism off (every stage imports everything itself, as before), and so does any failure
to start or reach a server: the stage then runs in its own process after one line on stderr.

Forking after these imports is safe because nothing in the server has run a TensorFlow op or created a
thread: the server checks both before it accepts a stage. GPUs are initialised in the child (CUDA is first
touched by the first op), which is the pattern CUDA supports, but it is untested here (no GPU).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import gc
import hashlib
import importlib
import io
import json
import os
import runpy
import selectors
import signal
import site
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from regbench.io import start_time, umask

# What the stages import that costs seconds; everything else they import is cheap or is imported by these.
PRELOAD = (
    "tensorflow",
    "keras",
    "mlflow",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "pandas",
    "scipy.stats",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "psutil",
    "yaml",
)
# Set per command by shells, DVC and this project, and read by none of PRELOAD at import: they do not split
# servers (the child gets the stage process' values).
VOLATILE_ENVIRONMENT = ("PWD", "OLDPWD", "SHLVL", "_", "PYTEST_CURRENT_TEST")
VOLATILE_PREFIXES = ("DVC_", "REGBENCH_")
NAMESPACES = ("net", "mnt", "pid", "user", "ipc", "uts")
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
DEFAULT_IDLE_SECONDS = 120.0
START_TIMEOUT_SECONDS = 120.0
_HEADER = struct.Struct("!I")


class Unavailable(Exception):
    """No warm server could run this stage; the caller runs it in its own process."""


def enabled() -> bool:
    return os.environ.get("REGBENCH_WARM", "1").strip().lower() not in ("0", "false", "no", "off")


def idle_seconds() -> float:
    raw = os.environ.get("REGBENCH_WARM_IDLE", str(DEFAULT_IDLE_SECONDS))
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"REGBENCH_WARM_IDLE must be a number of seconds; got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"REGBENCH_WARM_IDLE must be positive; got {raw!r}")
    return value


# --- where a server lives ----------------------------------------------------------------------------


def key() -> str:
    """Everything the preloaded libraries may have read when they were imported, as one digest."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in VOLATILE_ENVIRONMENT and not name.startswith(VOLATILE_PREFIXES)
    }
    # Installing or upgrading a package changes its directory's mtime. Only installation directories count:
    # a checkout on the path changes with every file written at its top, and its code is imported afresh by
    # every child anyway.
    installed = (sys.prefix, sys.base_prefix, site.getuserbase())
    package_dirs = {entry: _stat(entry, "st_mtime_ns") for entry in sys.path if entry.startswith(installed)}
    namespaces = {name: _stat(f"/proc/self/ns/{name}", "st_ino") for name in NAMESPACES}
    parts = {
        "python": sys.executable,
        "version": sys.version,
        "path": sys.path,
        "package_dirs": package_dirs,
        "environment": environment,
        "namespaces": namespaces,
        "uid": os.getuid(),
        "server_code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _stat(path: str, field: str) -> int | None:
    try:
        return getattr(os.stat(path), field)
    except OSError:
        return None


def runtime_dir() -> Path:
    """A directory only this user can write: sockets there cannot be planted by anyone else."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    directory = Path(base) / f"regbench-warm-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    status = directory.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise Unavailable(f"{directory} must be owned by uid {os.getuid()} and private (mode 700)")
    return directory


@dataclass(frozen=True)
class Paths:
    socket: Path
    spawn_lock: Path  # held by a stage process while it checks for, or starts, the server
    life_lock: Path  # held by the server for as long as it runs
    info: Path  # the server's pid, start time and checkout, for `status` and `stop`
    log: Path

    @classmethod
    def of(cls, server_key: str, directory: Path | None = None) -> Paths:
        stem = (directory or runtime_dir()) / server_key
        suffixes = (".sock", ".spawn.lock", ".life.lock", ".json", ".log")
        return cls(*(stem.with_suffix(suffix) for suffix in suffixes))


# --- the stage process (client) ---------------------------------------------------------------------


def delegate(module: str) -> int:
    """Run ``python -m module`` with this process' arguments in a warm child; return its exit status.

    A negative status is a death by that signal. Raises ``Unavailable`` before the child starts if there is
    no server to be had; once the child runs, its fate is the stage's.
    """
    idle_seconds()  # a typo in REGBENCH_WARM_IDLE is the user's to fix, not a reason to run cold
    try:
        paths = Paths.of(key())
    except OSError as error:
        raise Unavailable(f"no place for its socket: {error}") from None
    for _ in range(3):
        try:
            connection = _connect_or_start(paths)
        except OSError as error:
            raise Unavailable(f"could not start or reach it: {error}") from None
        try:
            child = _hand_over(connection, module)
        except ConnectionError:
            # The server was shutting down when it accepted us (idle): a new one will take the stage.
            connection.close()
            continue
        return _relay(connection, child)
    raise Unavailable("the warm server closed three connections before starting the stage")


def _connect_or_start(paths: Paths) -> socket.socket:
    with _locked(paths.spawn_lock):
        try:
            return _connect(paths.socket)
        except OSError:
            pass
        _start_server(paths)
        try:
            return _connect(paths.socket)
        except OSError as error:
            raise Unavailable(f"the warm server started but does not answer on {paths.socket}: {error}") from None


def _connect(path: Path) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
    except OSError:
        connection.close()
        raise
    return connection


def _start_server(paths: Paths) -> None:
    read_end, write_end = os.pipe()
    with open(paths.log, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "regbench.warm", "serve", paths.socket.stem, str(write_end)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(write_end,),
            # Its own session: a Ctrl-C or a process-group kill aimed at this stage must not end the server
            # that other stages share.
            start_new_session=True,
        )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as ready:
        answer = _read_with_timeout(ready, process, START_TIMEOUT_SECONDS)
    if answer != b"ready":
        raise Unavailable(f"the warm server did not start ({answer.decode(errors='replace')}); see {paths.log}")


def _read_with_timeout(stream, process: subprocess.Popen, timeout: float) -> bytes:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    if not selector.select(timeout):
        process.kill()
        return f"no answer in {timeout:.0f} s".encode()
    answer = stream.read().strip()
    return answer or f"it exited with status {process.wait()}".encode()


def _hand_over(connection: socket.socket, module: str) -> int:
    request = {
        "module": module,
        "argv": sys.argv,
        "path": sys.path,
        "cwd": os.getcwd(),
        "environment": dict(os.environ),
        "umask": umask(),
    }
    payload = json.dumps(request).encode()
    with contextlib.ExitStack() as stack:
        # A stream the stage process was started without is /dev/null to the child, as it would be to a
        # subprocess; the fd must exist to be passed.
        fds = [fd if _is_open(fd) else stack.enter_context(open(os.devnull, "r+b")).fileno() for fd in (0, 1, 2)]
        socket.send_fds(connection, [_HEADER.pack(len(payload)) + payload], fds)
    reply = _read_line(connection)
    if reply is None:
        raise ConnectionError("the warm server closed the connection")
    return int(json.loads(reply)["pid"])


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _relay(connection: socket.socket, child: int) -> int:
    def forward(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    def suspend(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)

    def resume(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGCONT)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    signal.signal(signal.SIGTSTP, suspend)
    signal.signal(signal.SIGCONT, resume)
    reply = _read_line(connection)
    connection.close()
    if reply is None:
        print("error: the warm server died while it ran this stage; rerun with REGBENCH_WARM=0", file=sys.stderr)
        return 1
    return int(json.loads(reply)["status"])


def _read_line(connection: socket.socket) -> bytes | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(4096)
        if not chunk:
            return None
        data += chunk
    return data


def exit_with(status: int) -> None:
    """End this process now, without Python's shutdown: with ``status``, or killed by signal ``-status``."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    os._exit(status)


# --- the server ---------------------------------------------------------------------------------------

# Set in a child the server forked, so that the stage runs its ``main`` instead of delegating again.
SERVED = False


def serve(server_key: str, ready_fd: int) -> None:
    ready = os.fdopen(ready_fd, "wb")
    if server_key != key():
        # A stage started with another interpreter or path than `python -m` gives: not ours to serve.
        ready.write(b"the server's key differs from the stage's (different sys.path or interpreter)")
        ready.close()
        return
    paths = Paths.of(server_key)
    with _locked(paths.life_lock) as lock_fd:
        problem = _preload()
        if problem:
            ready.write(problem.encode())
            ready.close()
            return
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(paths.socket))
        socket_inode = os.stat(paths.socket).st_ino
        listener.listen(16)
        # The start time tells this process from a later one that reuses its pid.
        info = {"pid": os.getpid(), "created": start_time(), "started": time.time(), "cwd": os.getcwd()}
        paths.info.write_text(json.dumps(info))
        ready.write(b"ready")
        ready.close()
        try:
            _Server(listener, lock_fd).run(idle_seconds())
        finally:
            listener.close()
            # Unlink the socket only if it is still ours: a successor may have bound a new one.
            with contextlib.suppress(OSError):
                if os.stat(paths.socket).st_ino == socket_inode:
                    paths.socket.unlink()
            for leftover in (paths.info, paths.log):  # the lock files stay: a successor may be waiting on them
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()


def _preload() -> str | None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            continue  # a stage that needs it will say so itself
    if threading.active_count() != 1:
        names = sorted(thread.name for thread in threading.enumerate())
        return f"an import started threads {names}; forking would copy their locks"
    if "tensorflow" in sys.modules:
        from tensorflow.python.eager import context

        if context.context_safe() is not None and context.context_safe()._context_handle is not None:
            return "TensorFlow's runtime is already initialised; a forked child could not use it"
    # The children share the server's memory until they write to it, and a garbage collection writes to every
    # object it visits: frozen objects are never visited, so the imported modules stay shared.
    gc.collect()
    gc.freeze()
    return None


class _Server:
    def __init__(self, listener: socket.socket, lock_fd: int):
        self.listener = listener
        self.lock_fd = lock_fd
        self.children: dict[int, socket.socket] = {}  # child pid -> its stage process' connection
        self.selector = selectors.DefaultSelector()
        self.wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(self.wakeup_read, False)
        os.set_blocking(wakeup_write, False)
        signal.set_wakeup_fd(wakeup_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, signum, frame) -> None:
        self.stopping = True

    def run(self, idle: float) -> None:
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wakeup_read, selectors.EVENT_READ, "signal")
        last_active = time.monotonic()
        while not self.stopping:
            timeout = None if self.children else max(0.0, last_active + idle - time.monotonic())
            events = self.selector.select(timeout)
            # A dead stage process first: its child must be gone before a rerun of the stage looks for it.
            for selection, _ in sorted(events, key=lambda event: event[0].data == "accept"):
                if selection.data == "signal":
                    self._drain_wakeups()
                    self._reap()
                elif selection.data == "accept":
                    self._accept()
                else:
                    self._client_closed(selection.data)
            if events or self.children:
                last_active = time.monotonic()  # idle counts from the end of the last stage
            elif time.monotonic() >= last_active + idle:
                break
        for child in list(self.children):
            _kill_group(child, signal.SIGTERM)
        while self.children:
            self._reap(block=True)

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wakeup_read, 512):
                pass

    def _accept(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        try:
            connection.settimeout(30)
            request, fds = _receive_request(connection)
        except (OSError, ValueError) as error:
            print(f"warm server: a bad request: {error}", file=sys.stderr, flush=True)
            connection.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, fds, connection, self)
        for fd in fds:
            os.close(fd)
        try:
            connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        except OSError:
            _kill_group(pid, signal.SIGKILL)
        self.children[pid] = connection
        self.selector.register(connection, selectors.EVENT_READ, pid)

    def _client_closed(self, pid: int) -> None:
        connection = self.children[pid]
        with contextlib.suppress(OSError):
            if connection.recv(1):
                return  # a stage process sends nothing after its request; ignore stray bytes
        # The stage process is gone (SIGKILL, or its parent killed it): its child must not train on.
        _kill_group(pid, signal.SIGKILL)
        self._reap(block=True, only=pid)

    def _reap(self, block: bool = False, only: int | None = None) -> None:
        while self.children:
            try:
                pid, wait_status = os.waitpid(only or -1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            connection = self.children.pop(pid, None)
            if connection is not None:
                self.selector.unregister(connection)
                status = os.waitstatus_to_exitcode(wait_status)
                with contextlib.suppress(OSError):
                    connection.sendall(json.dumps({"status": status}).encode() + b"\n")
                connection.close()
            if block:
                return


def _receive_request(connection: socket.socket) -> tuple[dict, list[int]]:
    message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
    if len(fds) != 3 or len(message) < _HEADER.size:
        for fd in fds:
            os.close(fd)
        raise ValueError("expected a request with three file descriptors")
    (length,) = _HEADER.unpack_from(message)
    payload = message[_HEADER.size :]
    while len(payload) < length:
        chunk = connection.recv(length - len(payload))
        if not chunk:
            raise ValueError("the request was cut short")
        payload += chunk
    return json.loads(payload), fds


def _kill_group(pid: int, signum: int) -> None:
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signum)


def _child(request: dict, fds: list[int], connection: socket.socket, server: _Server) -> None:
    """Become the stage process' stand-in and run its module as ``python -m`` would; never returns."""
    status = 1
    try:
        # Its own process group, so that a dead stage process takes everything the stage started with it.
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        # Nothing of the server's stays open in the stage: not its socket, nor its lock, nor other stages'.
        for sock in (server.listener, connection, *server.children.values()):
            with contextlib.suppress(OSError):
                os.close(sock.detach())
        for fd in (server.wakeup_read, server.lock_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
            signal.signal(signum, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["environment"])
        sys.argv[:] = request["argv"]
        sys.path[:] = request["path"]
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(line_buffering=stream.isatty() or stream is sys.stderr)
        # The server imported this package to run; the stage must see its current code, as a new process would.
        for name in [name for name in sys.modules if name.split(".")[0] in ("regbench", "stages")]:
            del sys.modules[name]
        if "numpy" in sys.modules:
            # Python's `random` reseeds itself in a forked child; NumPy's legacy global generator does not, and
            # a new process would seed it afresh. (No result may depend on it: seeds come from params.)
            sys.modules["numpy"].random.seed()
        importlib.import_module("regbench.warm").SERVED = True
        status = _run_module(request["module"])
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    finally:
        exit_with(status)


def _run_module(module: str) -> int:
    """``python -m module``'s exit status: SystemExit's code, 1 for an exception, -SIGINT for Ctrl-C."""
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code is None:
            return 0
        if isinstance(exit_.code, int):
            return exit_.code
        print(exit_.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield handle.fileno()


# --- status and stop ------------------------------------------------------------------------------------


def servers() -> list[dict]:
    """The running servers of this user: their key, pid and the checkout that started them."""
    found = []
    for info in sorted(runtime_dir().glob("*.json")):
        try:
            record = json.loads(info.read_text())
        except (OSError, ValueError):
            continue
        if _is_server(record):
            found.append({"key": info.stem, **record})
    return found


def _is_server(record: dict) -> bool:
    import psutil

    try:
        process = psutil.Process(record["pid"])
        return "regbench.warm" in process.cmdline() and start_time(process.pid) == record["created"]
    except (psutil.Error, KeyError, TypeError):
        return False


def stop(under: Path | None = None, timeout: float = 10.0) -> list[int]:
    """Stop the servers started from a checkout under ``under`` (all of this user's if None); their pids."""
    import psutil

    stopped = []
    for record in servers():
        if under is not None and not Path(record["cwd"]).is_relative_to(under):
            continue
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(record["pid"])
            process.terminate()
            try:
                process.wait(timeout)
            except psutil.TimeoutExpired:
                process.kill()
                process.wait(timeout)
            stopped.append(record["pid"])
    return stopped


def main(argv: list[str]) -> None:
    command = argv[0] if argv else ""
    if command == "serve" and len(argv) == 3:
        serve(argv[1], int(argv[2]))
    elif command == "status" and len(argv) == 1:
        for record in servers():
            age = time.time() - record["started"]
            print(f"{record['key']}  pid {record['pid']}  up {age:.0f} s  started from {record['cwd']}")
    elif command == "stop" and len(argv) in (1, 2):
        under = Path(argv[1]).resolve() if len(argv) == 2 else None
        print(f"stopped {len(stop(under))} warm server(s)")
    else:
        raise SystemExit("usage: python -m regbench.warm status | stop [CHECKOUT]")


if __name__ == "__main__":
    main(sys.argv[1:])
