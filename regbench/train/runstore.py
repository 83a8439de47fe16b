"""The run store: one file per trained run, keyed by the run's identity, so a stage trains only new runs.

A run's history is a pure function of its identity (``identity``: experiment, effective settings, grid
member, seed, fold, row cap, prepared-data digest, engine, determinism, and what regbench.train.identity
declares: the code that computes it, the libraries, the numeric environment, the CPU; tests/test_identity.py).
So when a stage reruns because its seed list grew, or because code that only writes or presents the numbers
changed, the runs it already has are read back instead of trained again, and the stage's outputs are the
same bytes as those of a run from scratch. ``REGBENCH_RETRAIN=1`` trains them again on purpose.

Layout: ``results/train/<stage>/runs/<key>.json``, a DVC output of the stage (cached, ``persist: true``:
DVC keeps it when the stage reruns). Each run goes into the store of the previous outputs as soon as it
finishes (``Keeper``), so a stage stopped in any way, SIGKILL included, trains only what had not finished
(unless ``REGBENCH_RETRAIN`` is set or the store cannot be written).
The outputs the stage then writes hold exactly the runs its seed list uses, so ``dvc.lock`` records what
was used; a run dropped from the list is dropped from the store (shrinking trains nothing, growing back
trains it again). A clean clone has no store and trains everything, to the
same results. Curves are kept as float32 bytes (base64): exact, and a fifth of their decimal text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from regbench.io import read_json, write_json
from regbench.train.run import History, Run

log = logging.getLogger(__name__)

DIRECTORY = "runs"
FORMAT = 1


def identity(
    experiment: str,
    member_params: Mapping[str, Any],
    grid_value: float | None,
    seed: int,
    fold: int | None,
    setup: Mapping[str, Any],
) -> dict[str, Any]:
    """What a run's history is a function of; ``setup`` holds what all runs of the stage share."""
    return {
        "experiment": experiment,
        "params": member_params,
        "grid_value": grid_value,
        "seed": seed,
        "fold": fold,
        **setup,
    }


def key(run_identity: Mapping[str, Any]) -> str:
    canonical = json.dumps(run_identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _encode(values: Sequence[float]) -> str:
    return base64.b64encode(np.asarray(values, "<f4").tobytes()).decode("ascii")


def _decode(text: str) -> list[float]:
    return np.frombuffer(base64.b64decode(text), "<f4").astype(float).tolist()


def entry(run_identity: Mapping[str, Any], history, evaluations: Mapping[str, float]) -> dict:
    """A stored run: its identity, how it ended, its curves (float32, as trained) and evaluations.

    Nothing that changes from one training to the next (its seconds, its MLflow run id): the file is a
    DVC output whose hash is in dvc.lock. Those go to the run log.
    """
    return {
        "format": FORMAT,
        "identity": dict(run_identity),
        "status": history.status,
        "diverged_epoch": history.diverged_epoch,
        "metrics": {name: _encode(values) for name, values in history.metrics.items()},
        "evaluations": dict(evaluations),
    }


def trained_under(stored: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The distinct code, libraries, environment and CPU (regbench.train.identity.setup) the runs were trained under."""
    found: dict[str, dict[str, Any]] = {}
    for entry in stored:
        shared = entry["identity"].get("trained_under", {})
        found.setdefault(key(shared), shared)
    return [found[k] for k in sorted(found)]


def history_of(stored: Mapping[str, Any]):
    """The History a stored run was written from."""
    return History(
        metrics={name: _decode(text) for name, text in stored["metrics"].items()},
        status=stored["status"],
        diverged_epoch=stored["diverged_epoch"],
        seconds=stored.get("seconds", 0.0),
    )


def load(stage_dir: Path, wanted: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The stored runs among ``wanted`` keys found under ``stage_dir``; unreadable files count as absent."""
    directory = Path(stage_dir) / DIRECTORY
    found = {}
    for run_key in wanted:
        path = directory / f"{run_key}.json"
        if not path.is_file():
            continue
        try:
            stored = read_json(path)
        except (OSError, ValueError):
            continue  # a damaged file: the run trains again
        if stored.get("format") == FORMAT and key(stored.get("identity", {})) == run_key:
            found[run_key] = stored
    return found


def write(stage_dir: Path, entries: Mapping[str, Mapping[str, Any]]) -> None:
    directory = Path(stage_dir) / DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    for run_key, stored in entries.items():
        write_json(directory / f"{run_key}.json", stored)


class Keeper:
    """Puts each run into the run store of the stage's previous outputs the moment it finishes.

    A RunObserver (regbench.train.run), placed before MLflow's: a run MLflow shows FINISHED is already
    kept. Whatever then stops the stage (an error, Ctrl-C, SIGTERM, a full MLflow store, SIGKILL), its
    outputs are discarded whole but the next run of the stage reads these runs back instead of training
    them again; DVC sees the ``runs`` output changed and reruns the stage (``dvc checkout`` would drop them).
    """

    def __init__(self, stage_dir: Path | None, identities: Sequence[Mapping[str, Any]], keys: Sequence[str]):
        """``identities`` and ``keys`` of the runs to train, in the executor's order; no ``stage_dir``: keep none.

        ``entries`` holds every finished run's stored form, by key, whether or not it could be kept: the
        stage's outputs are written from it.
        """
        self.stage_dir, self.identities, self.keys = stage_dir, identities, keys
        self.entries: dict[str, dict] = {}
        self.kept = 0
        self.error: OSError | None = None

    def on_run_started(self, index: int, run: Run) -> None:
        pass

    def on_run_finished(self, index: int, run: Run) -> None:
        run_key = self.keys[index]
        self.entries[run_key] = entry(self.identities[index], run.history, run.evaluations)
        if self.stage_dir is None or self.error is not None:
            return
        try:
            write(self.stage_dir, {run_key: self.entries[run_key]})
        except OSError as error:
            # Training goes on: the runs stay in memory for the stage's outputs; only the net for a stop is gone.
            self.error = error
            log.warning(
                "finished runs cannot be kept in %s (%s): a stopped stage will train them again",
                Path(self.stage_dir) / DIRECTORY,
                error,
            )
        else:
            self.kept += 1

    def on_failure(self, error: BaseException) -> None:
        pass

    def say_kept(self) -> None:
        """The line a stage that stops early prints: how many runs the next one will not train again."""
        if self.kept:
            where = Path(self.stage_dir) / DIRECTORY
            log.info("%d finished runs kept in %s: the next `dvc repro` reuses them", self.kept, where)
