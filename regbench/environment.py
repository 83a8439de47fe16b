"""Is this the project's Python? Every stage asks before it imports anything that is not the standard library.

DVC runs a stage's ``python`` from PATH. Run as ``.venv/bin/dvc repro`` without the environment activated,
that is the system's Python, which lacks the project's packages: the stage would die on its first import
with a bare ``No module named ...``, after DVC has already removed the stage's (cached) outputs. This module
therefore uses the standard library only, and reads the dependencies from their one home, pyproject.toml.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def missing_distributions(pyproject: Path = PYPROJECT) -> list[str]:
    """The project's declared dependencies that this interpreter does not have installed."""
    if not pyproject.exists():  # an installed copy of the library, not a checkout: nothing to compare with
        return []
    declared = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    missing = []
    for requirement in declared:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def wrong_environment_message(missing: list[str]) -> str:
    return (
        f"error: this stage runs under {sys.executable}, which is not the project's Python: it lacks "
        f"{', '.join(missing)}. Run the pipeline with `./run.sh repro`, or `source .venv/bin/activate` first "
        "(DVC starts each stage with the `python` found first on PATH). DVC may have removed this stage's "
        "outputs before starting it: `dvc checkout` restores them from its cache."
    )


def require_project_environment() -> None:
    """Exit with one clear message (code 1) unless every declared dependency is installed."""
    missing = missing_distributions()
    if missing:
        print(wrong_environment_message(missing), file=sys.stderr)
        sys.exit(1)
