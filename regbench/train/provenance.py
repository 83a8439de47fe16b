"""What produced a result: code version, library versions, device, DVC context."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from datetime import UTC, datetime

from regbench.train import identity

LIBRARIES = (
    "regbench",
    "tensorflow",
    "keras",
    "numpy",
    "scikit-learn",
    "dvc",
    "mlflow",
    "pandas",
    "matplotlib",
)
# What "-dirty" looks at: the code and its pinned environment. DVC itself rewrites dvc.lock and
# results/ between the stages of one `dvc repro`, which must not mark the later stages dirty.
CODE_PATHS = ("regbench", "stages", "dvc.yaml", "pyproject.toml", "requirements.lock")


def git_revision(cwd: str | os.PathLike | None = None) -> str:
    """HEAD's commit, with "-dirty" when CODE_PATHS differ from it; "unknown" outside a git checkout."""
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=cwd
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *(f":(top){path}" for path in CODE_PATHS)],
            capture_output=True,
            cwd=cwd,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{revision}-dirty" if dirty else revision


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device() -> str:
    """The accelerator Keras trains on: the GPUs TensorFlow sees (``identity.accelerators``), else the CPU.

    That looks for a GPU device node before it loads TensorFlow, so a stage that reads every run back
    starts without it.
    """
    gpus = identity.accelerators()
    if gpus:
        return f"GPU ({len(gpus)}x {gpus[0]})"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def machine(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict[str, object]:
    """The CPU and the kernel settings that decide float rounding: what a cross-machine difference comes from.

    The same items as a run's identity (regbench.train.identity), described for a reader.
    """
    described = identity.cpu(cpuinfo)
    return {
        "cpu_model": described["model"],
        "architecture": described["architecture"],
        "cores": os.cpu_count(),
        "isa": described["isa"],
        "kernel_env": {key: value for key, value in identity.environment().items() if value is not None},
        **_tensorflow_settings(),
    }


def _tensorflow_settings() -> dict[str, object]:
    import sys

    if "tensorflow" not in sys.modules:  # a stage that never loaded TensorFlow trained nothing with it
        return {}
    import tensorflow as tf

    threading = tf.config.threading
    return {
        "tensorflow_threads": {
            "intra_op": threading.get_intra_op_parallelism_threads(),
            "inter_op": threading.get_inter_op_parallelism_threads(),
        },
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 builds)"),
    }


def dvc_context() -> dict[str, str]:
    """Set by `dvc exp run` for the commands it runs."""
    return {key: os.environ[key] for key in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_ROOT") if key in os.environ}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
