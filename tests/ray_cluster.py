"""A real Ray cluster on loopback for the tests and the benchmark: a head and worker nodes, one CPU each.

Everything runs inside a private network namespace (``unshare -n``, then ``ip link set lo up``):
Ray 2.60 advertises the machine's interface address even with ``--node-ip-address=127.0.0.1``,
while in the namespace 127.0.0.1 is the only address there is, so nothing outside is contacted.
A ``sleep`` process holds the namespace; every command enters it with ``nsenter``.

Teardown kills only what this cluster started: each ``ray start`` runs in a session of its own,
and its daemons (GCS, raylet, agents) and the raylet's workers stay in that process group. The
process groups are killed, never ``ray stop`` (which ends every Ray process on the machine).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

PORT = 6379
# Plasma store per node: the tests' prepared data is a few kB; Ray's minimum is 75 MB.
OBJECT_STORE_BYTES = 100_000_000


def namespace_unavailable() -> str | None:
    """Why a private network namespace cannot be made here (then the cluster tests skip), or None."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`unshare -n` is not allowed here (needs root or user namespaces): {probe.stderr.strip()}"
    return None


class LoopbackCluster:
    """Start with ``start_head()`` and ``add_worker()``; ``run(...)`` runs a command inside the namespace."""

    def __init__(self, object_store_bytes: int = OBJECT_STORE_BYTES):
        self.object_store_bytes = object_store_bytes
        # Short: Ray's socket paths under it must stay within the 107-byte limit of a Unix socket name.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rbray-", dir="/tmp"))
        self.holder = subprocess.Popen(["unshare", "-n", "sleep", "infinity"], start_new_session=True)
        self.nodes: list[int] = []  # process group ids, one per node
        self.address = f"127.0.0.1:{PORT}"
        self.token = secrets.token_hex(32)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # Up once the holder has exec'd sleep inside the new namespace.
            if os.readlink(f"/proc/{self.holder.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.05)
        subprocess.run(self.prefix() + ["ip", "link", "set", "lo", "up"], check=True)

    def prefix(self) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n"]

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of the nodes and of every driver: the cluster's address and its own token.

        Ray turns token authentication on by default for some clusters from 2.59 on and otherwise reads
        ~/.ray/auth_token, which another Ray session on the machine may have written: a worker then
        failed to join ("InvalidAuthToken"). One explicit token per cluster, on every node and driver,
        makes the test cluster independent of the machine's Ray state.
        """
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        return {
            **os.environ,
            "PATH": path,
            "RAY_ADDRESS": self.address,
            "RAY_USAGE_STATS_ENABLED": "0",
            **auth,
            **extra,
        }

    def _ray_start(self, *args: str) -> int:
        ray = str(Path(sys.executable).parent / "ray")
        command = self.prefix() + [ray, "start", "--node-ip-address=127.0.0.1", "--num-cpus=1", *args]
        command += [f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats"]
        process = subprocess.Popen(
            command, start_new_session=True, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.nodes.append(process.pid)
        output, _ = process.communicate(timeout=120)
        if process.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{output}")
        return process.pid

    def start_head(self) -> int:
        return self._ray_start("--head", f"--port={PORT}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}")

    def add_worker(self) -> int:
        return self._ray_start(f"--address={self.address}")

    def processes(self, group: int) -> list[psutil.Process]:
        """The node's processes: its process group (the daemons) and their descendants (the raylet's
        workers, which Ray puts in process groups of their own)."""
        found: dict[int, psutil.Process] = {}
        for process in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(process.pid) == group:
                    found[process.pid] = process
                    found.update({child.pid: child for child in process.children(recursive=True)})
            except (ProcessLookupError, psutil.Error):
                continue
        return list(found.values())

    def running_task(self, group: int, name: str) -> bool:
        """Whether a worker of this node runs a task named ``name...`` now (Ray titles its process ``ray::<name>``)."""
        for process in self.processes(group):
            try:
                if " ".join(process.cmdline()).startswith(f"ray::{name}"):
                    return True
            except psutil.Error:
                continue
        return False

    def kill_node(self, group: int) -> None:
        """SIGKILL every process of a node: what a lost machine looks like to the rest of the cluster."""
        members = self.processes(group)
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            os.killpg(group, signal.SIGKILL)
        for process in members:
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                process.kill()

    def stop(self) -> None:
        for group in reversed(self.nodes):
            self.kill_node(group)
        self.holder.kill()
        self.holder.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
