"""The bits of tiny real runs, per engine path: run it at two commits and compare (same machine).

Builds the fixture data of the tests (tiny sonar, IMDB and MNIST files in the upstream formats;
circles and synthetic generated), prepares it with the real stages, and trains a few train-stage
runs through the public entry ``regbench.train.variant.train`` with every way of running: stacked
(one and two parts), per-run side by side, per-run one at a time, and ``model.fit``. Each run's
float32 curves and evaluations (as the run store keeps them, exact) are hashed; the table is
printed as JSON. A refactoring that must not change numbers gives the same table before and after:

    git archive <commit> | tar -x -C /tmp/before && cp bench/engine_bits.py /tmp/before/bench/
    (cd /tmp/before && python bench/engine_bits.py) > before.json
    python bench/engine_bits.py > after.json && diff before.json after.json
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (name, train-section changes, runs): each configuration trains in a fresh process, as a stage does.
CONFIGURATIONS = [
    ("stacked", {"stack_parts": 2}, ["circles-dropout_grid", "sonar-dropout_maxnorm", "mnist-dropout"]),
    ("stacked_one_part", {"stack_parts": 1}, ["sonar-l2", "synthetic-dropout"]),
    ("per_run_side_by_side", {"stack_parts": 2}, ["imdb-bigger", "imdb-dropout"]),
    ("per_run_one_at_a_time", {"stack_parts": 1}, ["imdb-original", "imdb-l1_l2"]),
    ("fit", {"engine": "fit"}, ["sonar-baseline", "imdb-weight_decay"]),
]
EXPERIMENT_EPOCHS = {"circles": 40, "synthetic": 20, "sonar": 6, "imdb": 3, "mnist": 2}


def prepare(workdir: Path) -> None:
    """Fixture mirror -> data/raw -> data/prepared, with the real fetch and prepare stages."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import imdb_archive, mnist_npz, shrunk_params, sonar_bytes, write_params

    mirror = workdir / "mirror"
    mirror.mkdir()
    (mirror / "sonar.all-data").write_bytes(sonar_bytes())
    imdb_archive(mirror / "aclImdb_v1.tar.gz")
    mnist_npz(mirror / "mnist.npz")
    runs: dict[str, list[str]] = {}
    for _, _, names in CONFIGURATIONS:
        for name in names:
            experiment, variant = name.split("-", 1)
            runs.setdefault(experiment, []).append(variant)
    raw = shrunk_params(mirror, runs, epochs=2, seeds=(0, 1, 2))
    for experiment, epochs in EXPERIMENT_EPOCHS.items():
        raw[experiment]["defaults"]["epochs"] = epochs
    write_params(workdir, raw)
    for stage, names in (("fetch", ["sonar", "imdb", "mnist"]), ("prepare", sorted(runs))):
        for name in names:
            subprocess.run(
                [sys.executable, "-m", f"stages.{stage}", name], cwd=workdir, check=True, env=_env(), stdout=sys.stderr
            )


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


def train(workdir: Path, changes: dict, names: list[str]) -> dict[str, dict[str, str]]:
    """In this process (a fresh one per configuration): train the runs, hash every run's stored bits."""
    import dataclasses

    import tensorflow as tf

    from regbench import config
    from regbench.train.variant import train as train_variant

    tf.config.experimental.enable_op_determinism()
    os.chdir(workdir)
    params = config.load()
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, **changes))
    table = {}
    for name in names:
        out = Path(tempfile.mkdtemp(dir=workdir))
        train_variant(params, name, out)
        for path in sorted((out / "runs").glob("*.json")):
            stored = json.loads(path.read_text())
            identity = stored["identity"]
            bits = json.dumps({k: stored[k] for k in ("status", "diverged_epoch", "metrics", "evaluations")})
            where = f"{name} {identity['grid_value']} seed {identity['seed']} fold {identity['fold']}"
            table[where] = hashlib.sha256(bits.encode()).hexdigest()[:16]
    return table


def main() -> None:
    if len(sys.argv) > 1:
        workdir, index = Path(sys.argv[1]), int(sys.argv[2])
        _, changes, names = CONFIGURATIONS[index]
        print(json.dumps(train(workdir, changes, names)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        prepare(workdir)
        table = {}
        for index, (label, _, _) in enumerate(CONFIGURATIONS):
            out = subprocess.run(
                [sys.executable, __file__, str(workdir), str(index)],
                cwd=ROOT,
                env=_env(),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            table[label] = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(table, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
