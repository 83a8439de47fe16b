"""What a run's numbers are a function of, declared once: the run store's keys and dvc.yaml's train deps.

A run's history and evaluations are a function of its own settings, seed, fold and prepared data (the
per-run part, ``runstore.identity``) and of what every run of a stage shares, declared here:

- ``COMPUTES``: the code that computes the numbers, from the prepared arrays to the stored history and
  evaluations. Its bytes are part of every run's identity: editing it retrains every run.
- ``LIBRARIES``: the libraries whose kernels do the arithmetic.
- ``ENVIRONMENT``: the environment variables TensorFlow, XLA and the BLAS/OpenMP pools read that change
  which kernels run or in which order they sum.
- ``ISA_FLAGS`` and the CPU model: the same code, seed and settings give the same bits only on the same CPU
  model with the same instruction-set extensions (oneDNN, Eigen and XLA pick kernels by them).

``RECORDS`` is the rest of the code the train stage runs: it reads params, writes and presents the numbers
(files, MLflow, progress, provenance). DVC reruns the stage when it changes, so every output is rewritten by
the current code, but the runs themselves are read back from the run store, not retrained.

dvc.yaml's train deps are generated from ``COMPUTES`` and ``RECORDS`` (``python -m tools.stage_deps``;
tests/test_stage_deps.py fails when dvc.yaml is out of date or when a module the stage imports is in
neither list). DVC cannot interpolate a list into ``deps`` (``Cannot interpolate data of type 'list'``:
https://github.com/treeverse/dvc/issues/8171, open; the pull request that would allow it, #9148, was
closed unmerged), hence a checked-in generator rather than ``vars``.

A run is retrained instead of reused when ``REGBENCH_RETRAIN`` is set (``dvc repro -f`` alone cannot say
so: DVC does not tell a stage it was forced).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

from regbench.cli import gpu_device_present, quiet_tensorflow_import

ROOT = Path(__file__).resolve().parents[2]

# The code that computes a run's numbers (paths from the repository root).
COMPUTES = (
    # The entry point: which runs train, reused or retrained (engine.deterministic_ops turns determinism on).
    "stages/train.py",
    # The prepared arrays as the engines see them.
    "regbench/data/datasets.py",
    "regbench/data/sparse.py",
    # What each repeat's seed draws: its experiment's own module ({experiment}: sonar's CV folds, the datasets of
    # scope data) and the seed rule they share (draw_seed).
    "regbench/data/experiments/{experiment}.py",
    "regbench/data/experiments/__init__.py",
    # Which rows, seeds and engine each run gets, and the engines, models and Ray workers that train it.
    "regbench/train/plan.py",
    "regbench/train/engine.py",
    "regbench/train/stacked.py",
    "regbench/train/models.py",
    "regbench/train/executor.py",
    # A run's training seed (fold runs derive theirs from the repeat seed) is decided on the Run type.
    "regbench/train/run.py",
    # records.mark_divergence decides the status a run is stored with (its finite blow-up rule).
    "regbench/train/records.py",
)
# The rest of what the train stage runs: params, outputs, MLflow, progress, provenance, the run store itself.
RECORDS = (
    "regbench/train/variant.py",
    "regbench/train/identity.py",
    "regbench/train/runstore.py",
    "regbench/train/progress.py",
    "regbench/train/tracking.py",
    "regbench/train/provenance.py",
    "regbench/train/plots.py",
    "regbench/config.py",
    # Imported by the experiment modules for preparing their data, which the prepared data's digest covers.
    "regbench/data/digests.py",
    "regbench/data/text.py",
    "regbench/schema.py",
    "regbench/cli.py",
    "regbench/io.py",
)
# The libraries whose kernels compute a run: another version may round differently.
LIBRARIES = ("python", "tensorflow", "keras", "numpy", "scikit-learn")
# Read by TensorFlow, XLA, oneDNN and the OpenMP/BLAS pools; each changes the kernels or their summation
# order. The code sets TensorFlow's op determinism (stages/train.py) and, for small stacks, one thread
# per op (engine.one_thread_per_op) itself: those are in COMPUTES.
ENVIRONMENT = (
    "KERAS_BACKEND",
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
    "TF_XLA_FLAGS",
    "XLA_FLAGS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "CUDA_VISIBLE_DEVICES",
)
# Instruction-set extensions that decide which kernels (oneDNN, Eigen, XLA) TensorFlow picks.
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
RETRAIN_VARIABLE = "REGBENCH_RETRAIN"


def computes(experiment: str) -> tuple[str, ...]:
    """COMPUTES for one experiment's train stages (its own module in place of ``{experiment}``)."""
    return tuple(path.format(experiment=experiment) for path in COMPUTES)


def code_digest(experiment: str, paths: tuple[str, ...] = COMPUTES, root: Path = ROOT) -> str:
    """Digest of the code that computes a run of ``experiment`` (its bytes, by path)."""
    digest = hashlib.sha256()
    for path in sorted(path.format(experiment=experiment) for path in paths):
        digest.update(path.encode() + b"\0" + (root / path).read_bytes() + b"\0")
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        if name == "python":
            versions[name] = platform.python_version()
            continue
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def environment() -> dict[str, str | None]:
    """Every variable of ENVIRONMENT, None where unset (unset and set to the default are told apart)."""
    return {name: os.environ.get(name) for name in ENVIRONMENT}


def cpu(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU model and which of ISA_FLAGS it has (from /proc/cpuinfo; the platform's name elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"model": model, "architecture": platform.machine(), "isa": [f for f in ISA_FLAGS if f in flags]}


def accelerators() -> list[str]:
    """The GPUs TensorFlow trains on (none: the CPU).

    Without a GPU device node there is none, and TensorFlow is not imported for nothing: a stage that
    reuses every run never loads it (regbench.train.variant).
    """
    if not gpu_device_present():
        return []
    with quiet_tensorflow_import():
        import tensorflow as tf

    return [
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        for gpu in tf.config.list_physical_devices("GPU")
    ]


def setup(experiment: str, cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict[str, Any]:
    """What every run of a stage shares in its identity: code, libraries, environment, CPU and accelerators."""
    return {
        "code": code_digest(experiment),
        "libraries": library_versions(),
        "environment": environment(),
        "cpu": cpu(cpuinfo),
        "accelerators": accelerators(),
    }


def retrain_requested() -> bool:
    """REGBENCH_RETRAIN=1: train every run of the stage again instead of reading it back from its run store."""
    value = os.environ.get(RETRAIN_VARIABLE, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"{RETRAIN_VARIABLE}={value!r}: use 1 (retrain every run of the stages that run) or 0 (reuse)")
