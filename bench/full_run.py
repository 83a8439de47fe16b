"""Wall time and memory of a ``dvc repro``, warm stage server included.

    python bench/full_run.py [dvc repro arguments]

Runs ``dvc repro`` in this checkout and samples, every 0.2 s, every process of the run: DVC's process tree
and the warm servers started from this checkout with their stage children (regbench/warm.py; they are not
DVC's descendants, so ``/usr/bin/time dvc repro`` would not see them). Reports the wall time, the peak of the
summed proportional set size (PSS: shared pages split between the processes sharing them, the honest total
for forked children), the peak of the summed RSS (counts shared pages once per process, an upper bound),
and the largest single process. Stop the warm servers afterwards with ``python -m regbench.warm stop .``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3


def pss(process: psutil.Process) -> int:
    try:
        with open(f"/proc/{process.pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sample(root: psutil.Process, checkout: Path, peaks: dict, done: threading.Event) -> None:
    from regbench import warm

    while not done.is_set():
        processes = [root]
        with contextlib.suppress(psutil.Error):
            processes += root.children(recursive=True)
        for record in warm.servers():
            if Path(record["cwd"]).resolve().is_relative_to(checkout):
                try:
                    server = psutil.Process(record["pid"])
                    processes += [server, *server.children(recursive=True)]
                except psutil.Error:
                    continue
        rss = []
        for process in processes:
            try:
                rss.append(process.memory_info().rss)
            except psutil.Error:
                continue
        peaks["rss"] = max(peaks.get("rss", 0), sum(rss))
        peaks["largest"] = max(peaks.get("largest", 0), max(rss, default=0))
        peaks["pss"] = max(peaks.get("pss", 0), sum(pss(process) for process in processes))
        time.sleep(0.2)


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", *argv], cwd=ROOT, env=environment)
    peaks: dict = {}
    done = threading.Event()
    sampler = threading.Thread(target=sample, args=(psutil.Process(process.pid), ROOT.resolve(), peaks, done))
    sampler.start()
    status = process.wait()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    minutes, seconds = divmod(wall, 60)
    print(
        f"dvc repro {' '.join(argv)}: exit {status}, {int(minutes)} min {seconds:.1f} s; peak memory of all its "
        f"processes: PSS {peaks.get('pss', 0) / GIB:.2f} GiB, RSS {peaks.get('rss', 0) / GIB:.2f} GiB "
        f"(shared pages counted per process), largest process {peaks.get('largest', 0) / GIB:.2f} GiB"
    )
    sys.exit(status)


if __name__ == "__main__":
    main(sys.argv[1:])
