"""Wall time and memory of a ``dvc repro``.

    python bench/full_run.py [dvc repro arguments]

Runs ``dvc repro`` in this checkout and samples the memory of DVC's process tree, its stage processes
included (bench/memory.py). Reports the wall time and the peaks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.memory import Sampler  # noqa: E402


def main(argv: list[str]) -> None:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", *argv], cwd=ROOT, env=environment)
    with Sampler(process.pid) as sampler:
        status = process.wait()
    minutes, seconds = divmod(time.perf_counter() - started, 60)
    print(
        f"dvc repro {' '.join(argv)}: exit {status}, {int(minutes)} min {seconds:.1f} s; "
        f"peak memory of all its processes: {sampler.summary()}"
    )
    sys.exit(status)


if __name__ == "__main__":
    main(sys.argv[1:])
