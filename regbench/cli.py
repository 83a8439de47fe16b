"""Shared start-up for the stage entry points: logging and a clean exit on expected errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from regbench import warm
from regbench.schema import ParamsError

REPO_ROOT = Path.cwd()


def run_stage(main: Callable[[list[str]], None], *, warm_start: bool = True) -> None:
    """Run a stage's ``main``; expected failures end with one clear message and exit code 1.

    With ``warm_start`` (and unless ``REGBENCH_WARM=0``), the stage runs in a child of a warm server that has
    already imported TensorFlow, Keras and MLflow (``regbench.warm``), and this process relays it.
    """
    # TensorFlow's start-up chatter does not belong in the DVC log. Set for every stage alike, before anything
    # imports TensorFlow: the warm server's key includes the environment, and one server serves all stages.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Only a stage run as `python -m stages.<stage>` is handed over: called from anywhere else (a test under
    # `python -m pytest`, say), the child would rerun that other __main__.
    spec = getattr(sys.modules["__main__"], "__spec__", None) if main.__module__ == "__main__" else None
    try:
        if warm_start and spec is not None and warm.enabled() and not warm.SERVED:
            try:
                status = warm.delegate(spec.name)
            except warm.Unavailable as reason:
                print(f"note: running without a warm server: {reason}", file=sys.stderr)
            else:
                warm.exit_with(status)
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
