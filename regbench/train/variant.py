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
import tempfile
from pathlib import Path
from typing import Any

from regbench.config import ExperimentParams, Member, Params, Variant
from regbench.data import datasets
from regbench.io import write_json
from regbench.schema import flatten, to_plain
from regbench.train import executor, identity, provenance, records, runstore
from regbench.train.plan import cv_folds, effective_params, plan_runs
from regbench.train.plots import plot_learning_curves
from regbench.train.progress import Progress
from regbench.train.run import Run
from regbench.train.tracking import ChildRuns, Tracker, start_stage_run, tracking_uri

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
    data = datasets.load(Path("data/prepared") / experiment.data)
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
    context = {
        "stage": stage,
        "git_revision": provenance.git_revision(),
        "data_digest": data.manifest["content_digest"],
        "data_source": data.manifest["source"]["source"],
        **provenance.dvc_context(),
    }
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
        parent = start_stage_run(tracker, run_name, context, variant.name, settings)
    # MLflow watches the runs it logs; without a tracker nothing does (and runs.json has no MLflow run ids).
    observers = [ChildRuns(tracker, parent, context, params.train.mlflow_max_steps)] if tracker is not None else []
    trained = [runs[i] for i in to_train]
    try:
        where = executor.train(params, trained, data, progress, stage, observers)
    finally:
        progress.close()
    for index, run in zip(to_train, trained, strict=True):
        stored[keys[index]] = runstore.entry(identities[index], run.history, run.evaluations, run.run_id)
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
    seconds = round(sum(results[i].history.seconds for i in to_train), 2)
    experiment_id = tracker.experiment_id if tracker is not None else None
    manifest = _manifest(params, experiment, variant, members, data, context, parent, experiment_id, seconds)
    # Where the runs trained (the Ray tasks and their nodes); the results do not depend on it.
    manifest["executor"] = where
    manifest["runs"] = {"trained": len(to_train), "reused": reused}
    # Read from the stored identities: what the runs in these results, reused ones included, were trained under.
    manifest["trained_under"] = runstore.trained_under(stored[run_key] for run_key in keys)
    write_json(out_dir / MANIFEST, manifest)
    if tracker is not None and parent is not None:
        # The parent run stays RUNNING: the stage ends it FINISHED once these outputs are in place.
        tracker.log_summary(parent, summary)
        tracker.log_artifact(parent, out_dir / records.HISTORIES)
        with tempfile.TemporaryDirectory() as scratch:
            figure = Path(scratch) / "learning_curves.png"
            curves = {
                m.label: {k: records.repeat_curves(written, m.label, k) for k in records.CURVE_METRICS} for m in members
            }
            plot_learning_curves(curves, figure, run_name, params.report.max_curve_points, "member")
            tracker.log_artifact(parent, figure)
    return summary


def _identities(params: Params, experiment: str, runs: list[Run], data_digest: str) -> list[dict[str, Any]]:
    """Each run's identity (regbench.train.runstore): its own settings, seed and fold, and what all share."""
    setup = {
        "data_digest": data_digest,
        "engine": params.train.engine,
        "deterministic": params.train.deterministic,
        "max_train_samples": params.train.max_train_samples,
        # Code, libraries, numeric environment, CPU: the one list of regbench.train.identity.
        "trained_under": identity.setup(),
    }
    return [
        runstore.identity(experiment, to_plain(run.params), run.grid_value, run.seed, run.fold, setup) for run in runs
    ]


def _read_back(run: Run, stored: dict[str, Any]) -> Run:
    """The run as its store entry has it: trained now or before, both are read back the same way."""
    history = runstore.history_of(stored)
    return dataclasses.replace(run, history=history, evaluations=stored["evaluations"], run_id=stored["mlflow_run_id"])


def _manifest(
    params: Params,
    experiment: ExperimentParams,
    variant: Variant,
    members: list[Member],
    data,
    context: dict[str, str],
    parent_run: str | None,
    experiment_id: str | None,
    training_seconds: float,
) -> dict[str, Any]:
    """What produced the stage's results: settings, data, code, libraries, device, MLflow run."""
    cv = experiment.defaults.validation == "cv"
    return {
        **context,
        "experiment": experiment.name,
        "variant": variant.name,
        "engine": params.train.engine,
        "seeds": list(experiment.seeds_of(variant.name)),
        "folds": None if not cv else int(data.manifest["folds"]),
        "members": [{"label": m.label, "grid_value": m.grid_value, "params": to_plain(m.params)} for m in members],
        "train": {k: v for k, v in to_plain(params.train).items() if k != "runs"},
        "data_manifest": {
            k: data.manifest[k] for k in ("experiment", "source", "content_digest", "shapes", "class_balance")
        },
        # The experiment id lets the report link to the experiment's runs view (regbench.train.tracking.runs_view_url).
        "mlflow": {"tracking_uri": tracking_uri(), "experiment_id": experiment_id, "parent_run_id": parent_run},
        "library_versions": provenance.library_versions(),
        "device": provenance.device(),
        "machine": provenance.machine(),
        "finished": provenance.now(),
        "training_seconds": training_seconds,
    }
