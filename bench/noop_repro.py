"""A `dvc repro` with nothing to do, with ruamel.yaml's C parser (ruamel.yaml.clib) and without it.

    python bench/noop_repro.py [repeats]      # default: 5

Runs ``dvc repro`` in this checkout, which must be up to date, ``repeats`` times each way, alternating. The
reference blocks the C extension (``_ruamel_yaml``) before DVC starts, so ruamel falls back to its pure-Python
parser, as it did before the extension was a dependency. Prints the medians and their ratio, and checks that
both ways found the pipeline up to date.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# DVC's own entry point, with or without the C parser importable.
LAUNCH = "import sys\n{block}from dvc.cli import main\nsys.exit(main(sys.argv[1:]))"
BLOCK = "sys.modules['_ruamel_yaml'] = None  # import fails: ruamel uses its Python parser\n"


def one(c_parser: bool) -> float:
    code = LAUNCH.format(block="" if c_parser else BLOCK)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "repro"], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or "Data and pipelines are up to date." not in done.stdout:
        raise SystemExit(f"dvc repro did not find the pipeline up to date:\n{done.stdout}{done.stderr}")
    return seconds


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for c_parser in (False, True):
            times[c_parser].append(one(c_parser))
    python, c = statistics.median(times[False]), statistics.median(times[True])
    for label, key in (("pure-Python parser", False), ("C parser", True)):
        each = ", ".join(f"{seconds:.2f}" for seconds in times[key])
        print(f"{label:>18}: median {statistics.median(times[key]):.2f} s  ({each})")
    print(f"ratio C / pure-Python: {c / python:.2f}")


if __name__ == "__main__":
    main()
