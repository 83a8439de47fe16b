"""What users see, checked in a real browser: headless Chromium and a local MLflow UI.

Used by ``tools/screenshots.py``, ``bench/mlflow_ui.py`` and the ``browser`` tests; the
pipeline never imports it. Chromium runs with a fresh profile in a temporary directory and no
background networking, so a page that needs the network shows up blank instead of quietly
loading from a CDN. The MLflow UI is started on 127.0.0.1 on a free port and stopped by its
process group id.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
# MLflow 3's UI defaults to 4 server workers; on a 2-core machine one answers first (bench/mlflow_ui.py).
MLFLOW_UI_WORKERS = 1


def chromium() -> str | None:
    """Path of the Chromium binary on PATH, or None."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def _run_chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("Chromium is not installed: apt-get update && apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="regbench-chromium-") as profile:
        command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"chromium exited with {result.returncode}: {result.stderr[-2000:]}")
    return result


def dump_dom(url: str, budget_ms: int = 15000, timeout: float = 120) -> str:
    """The DOM after the page's scripts ran for ``budget_ms`` of virtual time (what a person would see)."""
    return _run_chromium([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout).stdout


def screenshot(url: str, path: Path, size: tuple[int, int] = (1400, 1000), budget_ms: int = 15000) -> Path:
    """A PNG of the page as rendered after ``budget_ms`` of virtual time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run_chromium(
        [
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={path.resolve()}",
            url,
        ],
        timeout=180,
    )
    if not path.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {path}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MlflowUi:
    url: str
    pid: int
    seconds_to_answer: float


@contextlib.contextmanager
def mlflow_ui(
    backend_store_uri: str,
    workers: int | None = MLFLOW_UI_WORKERS,
    timeout: float = 180,
    log: Path | None = None,
    subcommand: str = "ui",
    extra_args: tuple[str, ...] = (),
) -> Iterator[MlflowUi]:
    """``mlflow ui`` (or ``mlflow server``) on 127.0.0.1 on a free port, until the UI page and the REST API answer.

    ``workers=None`` keeps MLflow's default; ``extra_args`` go to the command as they are (for example
    ``--artifacts-destination``). The server and its workers form their own process group, stopped
    (SIGTERM, then SIGKILL) when the block ends.
    """
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        subcommand,
        *extra_args,
        "--backend-store-uri",
        backend_store_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if workers is not None:
        command += ["--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    output = log.open("w") if log else subprocess.DEVNULL
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_answering(url, process, started + timeout)
        yield MlflowUi(url, process.pid, time.monotonic() - started)
    finally:
        _stop(process)
        if log:
            output.close()


def _wait_until_answering(url: str, process: subprocess.Popen, deadline: float) -> None:
    pending = [url + "/", url + "/ajax-api/2.0/mlflow/experiments/search?max_results=1"]
    while pending:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with {process.returncode} before answering on {url}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"mlflow ui did not answer on {url} in time")
        try:
            with urllib.request.urlopen(pending[0], timeout=5) as response:
                if response.status == 200:
                    pending.pop(0)
                    continue
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)
