"""Write the train stage's code deps in dvc.yaml from regbench/train/identity.py (COMPUTES, then RECORDS).

    python -m tools.stage_deps           # rewrite dvc.yaml
    python -m tools.stage_deps --check   # exit 1 when dvc.yaml is out of date (tests/test_stage_deps.py)

DVC cannot take a list from ``vars`` or params.yaml into ``deps`` (regbench/train/identity.py says why),
so the lists are written into dvc.yaml here; only the lines between the stage's ``deps:`` and its data
dependency are replaced, everything else in the file is kept as it is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regbench.train.identity import COMPUTES, RECORDS

DVC_YAML = Path(__file__).resolve().parents[1] / "dvc.yaml"
STAGE = "  train:\n"
DATA_DEP = "- data/prepared/${item.experiment}"
INDENT = " " * 8


def block() -> list[str]:
    lines = [
        f"{INDENT}# Generated from regbench/train/identity.py by `python -m tools.stage_deps`: edit the lists there.",
        f"{INDENT}# The code that computes a run's numbers (COMPUTES): a change retrains every run.",
        *(f"{INDENT}- {path.format(experiment='${item.experiment}')}" for path in COMPUTES),
        f"{INDENT}# The code that writes and presents them (RECORDS): a change reruns the stage, reusing its runs.",
        *(f"{INDENT}- {path}" for path in RECORDS),
    ]
    return [line + "\n" for line in lines]


def render(text: str) -> str:
    """``text`` (dvc.yaml) with the train stage's code deps written from the declaration."""
    lines = text.splitlines(keepends=True)
    try:
        stage = lines.index(STAGE)
        deps = next(i for i in range(stage, len(lines)) if lines[i].strip() == "deps:")
        data = next(i for i in range(deps, len(lines)) if lines[i].strip() == DATA_DEP)
    except (ValueError, StopIteration) as error:
        raise ValueError(f"dvc.yaml: no train stage with a deps list ending in {DATA_DEP!r}") from error
    return "".join(lines[: deps + 1] + block() + lines[data:])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when dvc.yaml is out of date")
    args = parser.parse_args(argv)
    current = DVC_YAML.read_text()
    wanted = render(current)
    if current == wanted:
        return 0
    if args.check:
        print("dvc.yaml: the train stage's deps differ from regbench/train/identity.py: run python -m tools.stage_deps")
        return 1
    DVC_YAML.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
