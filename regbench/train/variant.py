"""Train every member, repeat and fold of one variant; write its records, metrics and manifest.

``train(params, run_name, out_dir)`` is what the DVC stage calls and what the
tests call directly on a shrunk copy of the real params. One run (``run.Run``)
flows through: ``plan`` makes the runs and their rows, ``runstore`` reads back
those already trained, ``executor`` trains the others (stacked or one at a time,
here or on Ray) while MLflow watches (``tracking.ChildRuns``, a ``RunObserver``),
and ``records`` writes histories.csv, runs.json and the fold-then-repeat averages
in metrics.json and curves.csv.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import tempfile
from pathlib import Path
from typing import Any

from regbench.cli import quiet_tensorflow_import
from regbench.config import ExperimentParams, Member, Params, Variant
from regbench.data import datasets
from regbench.data.experiments import registry
from regbench.io import write_json
from regbench.schema import flatten, to_plain
from regbench.train import identity, provenance, records, runstore
from regbench.train.plan import cv_folds, effective_params, plan_runs
from regbench.train.plots import plot_learning_curves
from regbench.train.progress import Progress
from regbench.train.run import Run
from regbench.train.tracking import (
    ChildRuns,
    StoreUnwritable,
    Tracker,
    append_run_log,
    start_stage_run,
    variant_note,
)

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
MANIFEST = "manifest.json"


def train(
    params: Params, run_name: str, out_dir: Path, tracker: Tracker | None = None, reuse_from: Path | None = None
) -> dict[str, Any]:
    """Train the stage's runs into ``out_dir``; with a tracker, its parent run is left open.

    Runs found in the run store of ``reuse_from`` (the stage's previous outputs) with the same identity
    are read back, not trained: growing a seed list trains only the new seeds (regbench.train.runstore).
    The caller ends the parent run (``tracker.end_stage_run``): FINISHED only once ``out_dir`` is in
    place, else FAILED or KILLED (stages/train.py).
    """
    experiment, variant = params.run(run_name)
    data = datasets.load(Path("data/prepared") / experiment.data, randomness=experiment.randomness.scope)
    stage = f"train@{run_name}"
    folds = cv_folds(experiment, data)
    members = [dataclasses.replace(m, params=effective_params(m.params, params)) for m in variant.members]
    seeds = experiment.seeds_of(variant.name)
    runs = plan_runs(params, seeds, members, data, folds)
    identities = _identities(params, experiment.name, runs, data.manifest["content_digest"])
    keys = [runstore.key(identity) for identity in identities]
    stored = runstore.load(reuse_from, keys) if reuse_from is not None else {}
    to_train = [index for index, run_key in enumerate(keys) if run_key not in stored]
    reused = len(runs) - len(to_train)
    progress = Progress(stage, len(to_train))
    # Taken before training: the engines change TensorFlow's thread settings for their own runs, and only
    # when they train, so a rerun that reuses every run would otherwise record other values.
    machine = provenance.machine()
    context = {
        "stage": stage,
        "git_revision": provenance.git_revision(),
        "data_digest": data.manifest["content_digest"],
        "data_source": data.manifest["source"]["source"],
        **provenance.dvc_context(),
    }
    dataset = {"name": experiment.data, "digest": data.manifest["content_digest"], "source": data.manifest["source"]}
    parent = None
    if tracker is not None:
        settings = {
            "engine": params.train.engine,
            "seeds": list(seeds),
            "members": len(members),
            "runs_trained": len(to_train),
            "runs_reused": reused,
            **flatten(to_plain(members[0].params)),
        }
        note = variant_note(
            experiment.name,
            variant.name,
            _differences(experiment, variant, members),
            len(seeds),
            len(folds) if folds[0] is not None else None,
        )
        parent = start_stage_run(tracker, run_name, context, variant.name, settings, note, dataset)
    # MLflow watches the runs (without a tracker its calls do nothing); a full store stops its logging,
    # not the training.
    children = ChildRuns(tracker, parent, context, params.train.mlflow_max_steps, dataset)
    # Each finished run goes to the run store at once: whatever stops the stage, SIGKILL too, it stays.
    keeper = runstore.Keeper(reuse_from, [identities[i] for i in to_train], [keys[i] for i in to_train])
    trained = [runs[i] for i in to_train]
    try:
        where = _engines().train(params, trained, data, progress, stage, [keeper, children]) if trained else {}
    except BaseException:
        keeper.say_kept()
        raise
    finally:
        progress.close()
    stored.update(keeper.entries)
    if children.failure is not None:
        keeper.say_kept()
        raise children.failure
    out_dir.mkdir(parents=True, exist_ok=True)
    runstore.write(out_dir, {run_key: stored[run_key] for run_key in keys})
    # Every run, new or reused, is read back the same way: both give the same bytes downstream.
    results = [_read_back(run, stored[run_key]) for run, run_key in zip(runs, keys, strict=True)]
    written = records.to_runs(results)
    records.write(out_dir, written)
    records.write_curves(out_dir / records.CURVES, written, [m.label for m in members])
    cv = experiment.defaults.validation == "cv"
    summary = records.summarize(written, [(m.label, m.grid_value) for m in members], cv)
    write_json(out_dir / METRICS_FILE, summary if len(members) > 1 else next(iter(summary.values())))
    manifest = _manifest(params, experiment, variant, members, data, machine)
    # Read from the stored identities: what the runs in these results, reused ones included, were trained under.
    manifest["trained_under"] = runstore.trained_under(stored[run_key] for run_key in keys)
    write_json(out_dir / MANIFEST, manifest)
    # What changes from run to run goes to the untracked run log, not to the outputs DVC and git track.
    seconds = round(sum(run.history.seconds for run in trained), 2)
    append_run_log(
        stage,
        {
            "runs": {"trained": len(to_train), "reused": reused},
            "training_seconds": seconds,
            "git_revision": context["git_revision"],
            **provenance.dvc_context(),
            "host": socket.gethostname(),
            "mlflow": {
                "tracking_uri": tracker.uri if tracker is not None else None,
                "experiment_id": tracker.experiment_id if tracker is not None else None,
                "parent_run_id": parent,
            },
            # Where the runs trained (the Ray tasks and their nodes); the results do not depend on it.
            "executor": where,
            "trained": [
                {
                    "key": keys[index],
                    "label": run.label,
                    "seconds": round(run.history.seconds, 3),
                    "mlflow_run_id": run.run_id,
                }
                for index, run in zip(to_train, trained, strict=True)
            ],
        },
    )
    if tracker is not None and parent is not None:
        # The parent run stays RUNNING: the stage ends it FINISHED once these outputs are in place.
        try:
            tracker.log_summary(parent, summary)
            tracker.log_artifact(parent, out_dir / records.HISTORIES)
            with tempfile.TemporaryDirectory() as scratch:
                figure = Path(scratch) / "learning_curves.png"
                curves = {
                    m.label: {k: records.repeat_curves(written, m.label, k) for k in records.CURVE_METRICS}
                    for m in members
                }
                plot_learning_curves(curves, figure, run_name, params.report.max_curve_points, "member")
                tracker.log_artifact(parent, figure)
        except StoreUnwritable:
            # Every run is in the run store already: read back from it, or kept there as it finished.
            keeper.say_kept()
            raise
    return summary


def _engines():
    """The executor and its engines, imported once a run is to train: they load TensorFlow (about 5 s of a
    stage's start), which a stage that reads every run back from its run store does not need."""
    with quiet_tensorflow_import():
        from regbench.train import executor
    return executor


def _differences(experiment: ExperimentParams, variant: Variant, members: list[Member]) -> dict[str, Any]:
    """The settings a variant changes from its experiment's defaults (a grid: the grid's values)."""
    defaults = flatten(to_plain(experiment.defaults))
    changed = {k: v for k, v in flatten(to_plain(members[0].params)).items() if defaults.get(k) != v}
    if variant.grid_key is not None:
        changed = {k: v for k, v in changed.items() if k.split(".")[-1] != variant.grid_key.split(".")[-1]}
        changed[variant.grid_key] = "[" + ", ".join(f"{m.grid_value:g}" for m in members) + "]"
    return changed


def _identities(params: Params, experiment: str, runs: list[Run], data_digest: str) -> list[dict[str, Any]]:
    """Each run's identity (regbench.train.runstore): its own settings, seed and fold, and what all share."""
    setup = {
        "data_digest": data_digest,
        "engine": params.train.engine,
        "deterministic": params.train.deterministic,
        "max_train_samples": params.train.max_train_samples,
        # What the seed varies: under scope data a repeat trains on its own drawn dataset (regbench.data.datasets).
        "randomness": params.experiments[experiment].randomness.scope,
        # Code, libraries, numeric environment, CPU: the one list of regbench.train.identity.
        "trained_under": identity.setup(experiment),
    }
    return [
        runstore.identity(experiment, to_plain(run.params), run.grid_value, run.seed, run.fold, setup) for run in runs
    ]


def _read_back(run: Run, stored: dict[str, Any]) -> Run:
    """The run as its store entry has it: trained now or before, both are read back the same way."""
    history = runstore.history_of(stored)
    return dataclasses.replace(
        run, history=history, evaluations=stored["evaluations"], run_id=stored.get("mlflow_run_id")
    )


def _manifest(
    params: Params, experiment: ExperimentParams, variant: Variant, members: list[Member], data, machine: dict
) -> dict[str, Any]:
    """What produced the stage's results: settings, data, code, libraries, machine.

    A function of the code, params, data and machine only, so a rerun writes the same bytes (issue 25):
    timings, run ids, paths, hosts, timestamps and the git commit are in the run log and MLflow.
    """
    cv = experiment.defaults.validation == "cv"
    return {
        "stage": f"train@{experiment.name}-{variant.name}",
        "data_digest": data.manifest["content_digest"],
        "data_source": data.manifest["source"]["source"],
        "experiment": experiment.name,
        "variant": variant.name,
        "engine": params.train.engine,
        "seeds": list(experiment.seeds_of(variant.name)),
        "folds": None if not cv else int(data.manifest["folds"]),
        # What the seeds varied (weights, order, masks, split, data draw) and what stayed fixed.
        "randomness": registry()[experiment.data].randomness(experiment.randomness.scope),
        "members": [{"label": m.label, "grid_value": m.grid_value, "params": to_plain(m.params)} for m in members],
        "train": {k: v for k, v in to_plain(params.train).items() if k != "runs"},
        "data_manifest": {
            k: data.manifest[k] for k in ("experiment", "source", "content_digest", "shapes", "class_balance")
        },
        # The MLflow experiment; its runs are found by their tags (regbench.train.tracking.stage_parent_runs).
        "mlflow_experiment": f"regbench/{experiment.name}",
        "library_versions": provenance.library_versions(),
        "device": provenance.device(),
        "machine": machine,
    }
