#!/usr/bin/env bash
# Set up the project (virtual environment from the lock file) and run it.
#   ./run.sh repro [dvc repro args]   set up, then run the whole pipeline (dvc repro)
#   ./run.sh test  [pytest args]      set up, then lint (ruff check, ruff format --check) and run the test suite
#   ./run.sh decide [--max-rounds N]  set up, then add seeds to undecided claims round by round (docs/claims.md)
#   ./run.sh setup                    only set up
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the lock file or the package metadata changed.
stamp=.venv/.regbench-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.lock
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi
# DVC runs each stage's `python` from PATH: make it this environment's.
export PATH="$PWD/.venv/bin:$PATH"

case "${1:-}" in
  repro)
    shift
    # One line first: how many stages and runs are due (regbench/due.py).
    python -m regbench.due "$@" || true
    exec dvc repro "$@"
    ;;
  test)
    shift
    # Lint first: CI fails on a style error as it does on a failing test.
    ruff check .
    ruff format --check .
    exec python -m pytest "$@"
    ;;
  decide) shift; exec python -m stages.decide "$@" ;;
  setup) ;;
  *) echo "usage: ./run.sh repro|test|decide|setup [args]" >&2; exit 2 ;;
esac
