"""The records of a train stage: the history table, its two files, and the one rule for averaging runs.

A train stage leaves two files per variant, and every writer and reader goes through this module:

- ``histories.csv``: the history table, one row per run and epoch (columns ``HISTORY_COLUMNS``);
- ``runs.json``: one record per run: where it sits (member, repeat, seed, fold), how it ended,
  and its final values (last-epoch metrics, best epoch, inference-mode evaluations). Both are a
  function of the runs' identities only: timings and MLflow run ids go to MLflow and the run log
  (regbench.train.tracking.append_run_log), so a rerun that reproduces the numbers writes the same bytes.

Averaging is always fold-then-repeat: a repeat's value is the mean over its CV folds (a single run
without CV), and a repeat with a run that did not finish ok is left out whole, so that every repeat
averages the same folds. Repeats are then the independent samples: the stage's metrics.json and
curves.csv average them, the claims stage bootstraps them, the report plots them.

Which runs count as diverged is decided here too (``DIVERGENCE_RULE``), once, when a run finishes
training: its status in runs.json, the run store and MLflow is then what every reader uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from regbench.io import atomic_path, read_json, write_json

# Per-epoch metrics, as model.fit reports them (reg_loss: the regularization penalty at the epoch's end).
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "reg_loss")
# Measured once after the last epoch, in inference mode (test_* only where there is a separate test set).
FINAL_METRICS = ("train_eval_loss", "train_eval_accuracy", "test_loss", "test_accuracy")
PLACEMENT = ("member", "grid_value", "repeat", "seed", "fold")
HISTORY_COLUMNS = (*PLACEMENT, "epoch", *EPOCH_METRICS)
# A runs.json record: these fields, then the run's final values. ("seconds" and "mlflow_run_id", in
# records written before they moved to the run log, are not final values either.)
RUN_FIELDS = (*PLACEMENT, "status", "diverged_epoch", "epochs", "seconds", "mlflow_run_id")
# The stage's headline DVC metrics (metrics/<stage>.json): the few numbers a person compares. The same
# keys in every stage's file, so `dvc metrics show` is one row per stage and a few columns.
HEADLINE_KEYS = ("val_accuracy", "best_val_accuracy", "test_accuracy", "runs", "diverged")
CURVE_METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")
HISTORIES = "histories.csv"
RUNS = "runs.json"
CURVES = "curves.csv"
# Both CSV files have always been written by Python's csv module: keep its line ends.
LINE_END = "\r\n"

# A run diverged at the first epoch where (1) its loss or validation loss is NaN or infinite (the engines
# stop it there: run.History.append), or (2) a finite loss is beyond DIVERGENCE_FACTOR times its start:
# the loss or validation loss beyond FACTOR x (ln k + the penalty after the first epoch), or the validation
# cross-entropy alone (val_loss - reg_loss, exact at the epoch's end) beyond FACTOR x ln k. ln k (k classes,
# 2 for one sigmoid output) is the cross-entropy of an uninformed prediction, where every run starts (its
# initial logits are near 0); the penalty's size is the user's choice of factor, so it is part of the start.
# Why 1000: the healthy runs of the committed real run (29 variants) stay within 3.4 times their start (the
# largest: circles' validation loss, 2.3 against ln 2 in curves.csv and runs.json; MNIST dropout's first-epoch
# loss, 3.0 against ln 10), while a loss 1000 times its start takes logits of about +-700 on wrong predictions
# (the engines' cross-entropy is computed from the logits, unbounded), or hidden weights grown about 30-fold
# (L2) since the first epoch: an optimizer that blew up, whatever the loss reads later (a ReLU network whose
# optimizer blew up often dies to a constant prediction, loss ln 2 again). Runs that blew up (SGD at learning
# rates 1 to 100 on toy data) reached 2e3 to 1e33 while finite.
# The cross-entropy clause catches a run whose first epoch already blew up its weights (its penalty after
# that epoch, and so the first limit, is then huge too).
DIVERGENCE_FACTOR = 1000.0
DIVERGENCE_RULE = (
    f"a loss NaN or infinite, or beyond {DIVERGENCE_FACTOR:g} times its start: the cross-entropy of an "
    "uninformed prediction, ln k for k classes, plus the penalty after the first epoch"
)


@dataclass
class RunRecord:
    """One run as the readers of histories.csv and runs.json see it: its per-epoch curves and final values.

    The read side of a ``run.Run``, and honestly another thing: what the files keep (curves at the
    7 digits of histories.csv, the final values of runs.json), without the settings, rows or engine
    history a run is trained with. The claims and report stages read only this, without the training code.
    """

    member: str
    repeat: int
    fold: int | None
    status: str
    curves: dict[str, np.ndarray]
    finals: dict[str, float]
    grid_value: float | None = None
    seed: int | None = None
    record: dict[str, Any] = field(default_factory=dict)


# The name the claims and report layers import (regbench.claims.judge, regbench.report.build).
Run = RunRecord


# --- divergence ----------------------------------------------------------------------


def beyond_limit_epoch(metrics: Mapping[str, Sequence[float]], classes: int) -> int | None:
    """The first epoch (1-based) at which a finite history is beyond the divergence limits, or None."""
    loss, val_loss, penalty = (np.asarray(metrics[name], float) for name in ("loss", "val_loss", "reg_loss"))
    if not len(loss):
        return None
    uninformed = math.log(max(2, classes))
    limit = DIVERGENCE_FACTOR * (uninformed + max(0.0, float(penalty[0])))
    beyond = (loss > limit) | (val_loss > limit) | (val_loss - penalty > DIVERGENCE_FACTOR * uninformed)
    return int(np.argmax(beyond)) + 1 if beyond.any() else None


def mark_divergence(history, classes: int) -> None:
    """Mark a finished run diverged (run.History: status, diverged_epoch) if its finite loss blew up.

    The engines mark only a NaN or infinite loss; ``classes`` is the number of classes (1 output: 2).
    """
    if history.status == "ok" and (epoch := beyond_limit_epoch(history.metrics, classes)) is not None:
        history.status, history.diverged_epoch = "diverged", epoch


def divergence_reason(status: str, diverged_epoch: int | None, epochs: int) -> str | None:
    """Why a run counts as diverged, in words (None if it did not): a NaN stops it, a blow-up does not."""
    if status == "ok":
        return None
    if diverged_epoch is None:
        return status
    if epochs < diverged_epoch:
        return f"loss NaN or infinite at epoch {diverged_epoch}"
    return f"loss beyond {DIVERGENCE_FACTOR:g} times its start from epoch {diverged_epoch}"


def diverged_repeats(runs: Sequence[Run], member: str | None = None) -> dict[int, list[str]]:
    """The repeats (by seed) left out because a run of theirs diverged, each with its runs' reasons."""
    left_out: dict[int, list[str]] = {}
    for run in runs:
        if run.status != "ok" and (member is None or run.member == member):
            why = divergence_reason(run.status, run.record.get("diverged_epoch"), run.record.get("epochs", 0))
            where = "" if run.fold is None else f"fold {run.fold}: "
            left_out.setdefault(int(run.seed), []).append(where + str(why))
    return dict(sorted(left_out.items()))


# --- from training to records ------------------------------------------------------


def final_values(result) -> dict[str, float]:
    """Last-epoch metrics, the best validation epoch and the inference-mode evaluations of a trained ``run.Run``."""
    metrics = result.history.metrics
    if not metrics["loss"]:
        return {}
    val_loss = np.asarray(metrics["val_loss"])
    best = int(np.argmin(val_loss))
    final = {f"final_{k}": metrics[k][-1] for k in EPOCH_METRICS}
    final.update(
        {
            "best_val_loss": float(val_loss[best]),
            "best_val_loss_epoch": best + 1,
            "best_val_accuracy": float(np.max(metrics["val_accuracy"])),
        }
    )
    final.update(result.evaluations)
    return final


def run_record(result) -> dict[str, Any]:
    """A trained ``run.Run``'s runs.json record."""
    history = result.history
    return {
        "member": result.member,
        "grid_value": result.grid_value,
        "repeat": result.repeat,
        "seed": result.seed,
        "fold": result.fold,
        "status": history.status,
        "diverged_epoch": history.diverged_epoch,
        "epochs": history.epochs,
        **final_values(result),
    }


def _run(record: dict[str, Any], curves: dict[str, np.ndarray]) -> RunRecord:
    finals = {k: float(v) for k, v in record.items() if k not in RUN_FIELDS and v is not None}
    return RunRecord(
        record["member"],
        record["repeat"],
        record["fold"],
        record["status"],
        curves,
        finals,
        record["grid_value"],
        record["seed"],
        record,
    )


def to_runs(results: Sequence) -> list[RunRecord]:
    """Trained ``run.Run`` objects as the readers of the written files will see them."""
    return [_run(run_record(r), {m: np.asarray(r.history.metrics[m], float) for m in EPOCH_METRICS}) for r in results]


# --- the files -----------------------------------------------------------------


def history_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run and epoch, in run order."""
    frames = [
        pd.DataFrame(
            {
                "member": run.member,
                "grid_value": np.nan if run.grid_value is None else run.grid_value,
                "repeat": run.repeat,
                "seed": run.seed,
                "fold": pd.array([run.fold] * len(run.curves["loss"]), dtype="Int64"),
                "epoch": np.arange(1, len(run.curves["loss"]) + 1),
                **{m: run.curves[m] for m in EPOCH_METRICS},
            },
            columns=list(HISTORY_COLUMNS),
        )
        for run in runs
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(HISTORY_COLUMNS))


def write(out_dir: Path, runs: Sequence[Run]) -> None:
    """``histories.csv`` and ``runs.json`` of a stage."""
    table = history_table(runs)
    # Metrics with 7 significant digits (float32 precision); a grid value as Python prints it.
    table["grid_value"] = table["grid_value"].map(lambda v: "" if pd.isna(v) else repr(float(v))).astype(object)
    with atomic_path(out_dir / HISTORIES) as temporary:
        table.to_csv(temporary, index=False, float_format="%.7g", lineterminator=LINE_END)
    write_json(out_dir / RUNS, [run.record for run in runs])


def read_histories(path: Path) -> pd.DataFrame:
    """The history table of ``histories.csv`` (empty grid values and folds read as missing)."""
    dtypes = {"member": str, "grid_value": float, "repeat": int, "seed": int, "fold": "Int64", "epoch": int}
    return pd.read_csv(
        path,
        dtype={**dtypes, **dict.fromkeys(EPOCH_METRICS, float)},
        keep_default_na=False,
        na_values={"grid_value": [""], "fold": [""]},
        # Exactly the float the text says, as Python's float() reads it.
        float_precision="round_trip",
    )


def load_runs(variant_dir: Path) -> list[Run]:
    """Every run of a train stage: its curves from histories.csv, the rest of it from runs.json."""
    table = read_histories(variant_dir / HISTORIES)
    curves = {}
    for (member, repeat, fold), group in table.groupby(["member", "repeat", "fold"], sort=False, dropna=False):
        key = (member, int(repeat), None if pd.isna(fold) else int(fold))
        curves[key] = {m: group[m].to_numpy() for m in EPOCH_METRICS}
    empty = {m: np.zeros(0) for m in EPOCH_METRICS}
    return [
        _run(record, curves.get((record["member"], record["repeat"], record["fold"]), empty))
        for record in read_json(variant_dir / RUNS)
    ]


# --- fold-then-repeat --------------------------------------------------------------


def complete_repeats(runs: Sequence[Run]) -> list[Run]:
    """The runs of the repeats whose every run finished ok (per member)."""
    frame = pd.DataFrame({"member": [r.member for r in runs], "repeat": [r.repeat for r in runs]})
    frame["ok"] = [r.status == "ok" for r in runs]
    complete = frame.groupby(["member", "repeat"])["ok"].transform("all") if runs else frame["ok"]
    return [run for run, keep in zip(runs, complete, strict=True) if keep]


def per_repeat(
    runs: Sequence[Run], value: Callable[[Run], float | np.ndarray], member: str | None = None
) -> dict[int, Any]:
    """``value`` of each run averaged over the folds of its repeat, keyed by the repeat's seed: a number,
    or a curve cut to the epochs every run of the repeat has. Repeats with a run that did not finish ok
    are left out.

    Keyed by seed, not by position in the seed list: variants may have different seeds (params.yaml
    ``<experiment>.variants.<variant>.seeds``), and a paired claim pairs the runs that share a seed.
    """
    chosen = complete_repeats([run for run in runs if member is None or run.member == member])
    rows, scalar = [], True
    for number, run in enumerate(chosen):
        measured = value(run)
        scalar = np.ndim(measured) == 0
        steps = np.atleast_1d(np.asarray(measured, float))
        rows.append(pd.DataFrame({"seed": run.seed, "run": number, "step": np.arange(len(steps)), "value": steps}))
    if not rows:
        return {}
    table = pd.concat(rows, ignore_index=True)
    lengths = table.groupby(["seed", "run"])["step"].transform("size")
    table = table[table["step"] < lengths.groupby(table["seed"]).transform("min")]
    means = table.groupby(["seed", "step"])["value"].mean()
    return {
        int(seed): float(series.iloc[0]) if scalar else series.to_numpy()
        for seed, series in means.groupby(level="seed")
    }


def repeat_curves(runs: Sequence[Run], member: str, metric: str) -> np.ndarray:
    """(repeats, epochs): each repeat's curve of ``metric``, averaged over its folds."""
    curves = list(per_repeat(runs, lambda run: run.curves[metric], member).values())
    if not curves:
        return np.zeros((0, 0))
    length = min(len(c) for c in curves)
    return np.asarray([c[:length] for c in curves])


def summarize(runs: Sequence[Run], members: Sequence[tuple[str, float | None]], cv: bool) -> dict[str, Any]:
    """Per member (label, grid value): run counts, then mean and std over repeats of every final value."""
    complete = complete_repeats(runs)
    finals = pd.DataFrame([{"member": r.member, "repeat": r.repeat, **r.finals} for r in complete])
    by_repeat = finals.groupby(["member", "repeat"], sort=False).mean() if complete else finals
    summary: dict[str, Any] = {}
    for label, grid_value in members:
        own = [r for r in runs if r.member == label]
        entry: dict[str, Any] = {
            "runs": len(own),
            "diverged": sum(r.status == "diverged" for r in own),
            "repeats_ok": len({r.repeat for r in complete if r.member == label}),
            "status": "ok" if all(r.status == "ok" for r in own) else "diverged",
        }
        if grid_value is not None:
            entry["grid_value"] = grid_value
        if entry["repeats_ok"]:
            repeats = by_repeat.xs(label, level="member")
            for key, mean, std in zip(repeats.columns, repeats.mean(), repeats.std(ddof=0), strict=True):
                if not math.isnan(mean):
                    entry[key], entry[f"{key}_std"] = round(float(mean), 6), round(float(std), 6)
            if cv:
                entry["cv_accuracy"] = entry["final_val_accuracy"]
        summary[label] = entry
    return summary


def headline(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The stage's few comparable numbers from its per-member summary (``summarize``).

    Means over repeats (CV: of the fold means) of the last epoch's and of the best epoch's validation
    accuracy, the test accuracy where there is a test set, and the run counts. A grid reports its best
    member by final validation accuracy, and that member's grid value (``grid_best``).
    """
    entries = list(summary.values())
    scored = [e for e in entries if "final_val_accuracy" in e]
    best = max(scored, key=lambda e: e["final_val_accuracy"]) if scored else (entries[0] if entries else {})
    line: dict[str, Any] = {}
    for key, source in (
        ("val_accuracy", "final_val_accuracy"),
        ("best_val_accuracy", "best_val_accuracy"),
        ("test_accuracy", "test_accuracy"),
    ):
        if source in best:
            line[key] = round(float(best[source]), 4)
    line["runs"] = sum(int(e.get("runs", 0)) for e in entries)
    line["diverged"] = sum(int(e.get("diverged", 0)) for e in entries)
    if len(entries) > 1 and "grid_value" in best:
        line["grid_best"] = best["grid_value"]
    return line


def write_curves(path: Path, runs: Sequence[Run], members: Sequence[str]) -> None:
    """Per epoch, the mean over repeats of each member's curves: the stage's DVC plot (x = epoch)."""
    columns: dict[str, np.ndarray] = {}
    for label in members:
        suffix = "" if len(members) == 1 else f"[{label.split('[', 1)[-1].rstrip(']')}]"
        for metric in CURVE_METRICS:
            curves = repeat_curves(runs, label, metric)
            if curves.size:
                columns[metric + suffix] = curves.mean(axis=0)
    length = min((len(c) for c in columns.values()), default=0)
    table = pd.DataFrame({"epoch": np.arange(1, length + 1), **{k: c[:length] for k, c in columns.items()}})
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False, float_format="%.6g", lineterminator=LINE_END)
