"""Shared start-up for the stage entry points: logging and a clean exit on expected errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from regbench.schema import ParamsError

REPO_ROOT = Path.cwd()


def run_stage(main: Callable[[list[str]], None]) -> None:
    """Run a stage's ``main``; expected failures end with one clear message and exit code 1."""
    # TensorFlow's start-up chatter does not belong in the DVC log: set before anything imports TensorFlow.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        main(sys.argv[1:])
    except (ParamsError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


def one_argument(argv: list[str], choices, what: str) -> str:
    if len(argv) != 1 or argv[0] not in choices:
        raise ValueError(f"expected one {what} argument, one of {sorted(choices)}; got {argv}")
    return argv[0]


def no_arguments(argv: list[str], stage: str) -> None:
    if argv:
        raise ValueError(f"the {stage} stage takes no arguments; got {argv}")
