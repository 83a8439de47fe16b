"""sonar (tutorial 003): the UCI Sonar rows, cross-validated on stratified folds drawn anew by every repeat.

The published code draws a new split on every run (``StratifiedKFold(n_splits=10, shuffle=True)``
with no seed), so the split is part of each run's randomness: each repeat draws its folds from its
own seed (``fold_assignment``), the same folds in every variant, so variants stay paired.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from regbench.data import digests
from regbench.data.experiments import Arrays, DataError, Experiment, Raw, draw_seed
from regbench.schema import check


@dataclass(frozen=True)
class SonarPrepare:
    folds: int = check(lambda v: v >= 2, "must be 2 or more", default=10)
    # Fitted on each fold's training part; off in the published code.
    standardize: bool = False


def parse_sonar(data: bytes, name: str = "sonar.all-data") -> tuple[np.ndarray, np.ndarray]:
    """Rows of 60 floats and a label R or M; any other row is an error naming its line."""
    text = digests.normalize_sonar_text(data.decode("ascii", errors="replace"))
    features, labels = [], []
    for line_number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if len(row) != 61:
            raise DataError(f"{name} line {line_number}: expected 61 fields (60 features and a label), got {len(row)}")
        try:
            values = [float(v) for v in row[:60]]
        except ValueError:
            raise DataError(f"{name} line {line_number}: a feature is not a number: {row[:60]}") from None
        if not np.all(np.isfinite(np.asarray(values, dtype=np.float32))):
            # nan, inf or a number beyond float32 (1e400): training would diverge at its first epoch.
            raise DataError(
                f"{name} line {line_number}: a feature is NaN, infinite or too large for float32: "
                f"{[v for v in row[:60] if not np.isfinite(np.float32(float(v)))]}; fix or replace the file"
            )
        label = row[60].strip()
        if label not in ("M", "R"):
            raise DataError(f"{name} line {line_number}: label must be M or R, got {label!r}")
        features.append(values)
        labels.append(1.0 if label == "M" else 0.0)
    if not features:
        raise DataError(f"{name}: no rows")
    return np.asarray(features, dtype=np.float32), np.asarray(labels, dtype=np.float32)


def prepare(params: SonarPrepare, raw: Raw) -> tuple[Arrays, dict]:
    x, y = parse_sonar(raw.file.read_bytes(), raw.file.name)
    if np.bincount(y.astype(int)).min() < params.folds:
        raise DataError(f"{raw.file.name}: too few rows of one class for {params.folds} stratified folds")
    # No folds here: each repeat draws its own (repeat_data). Standardization, when on, is fitted per
    # fold at training time, on that fold's training rows.
    arrays = {"x_train": x, "y_train": y}
    return arrays, {
        "folds": params.folds,
        "standardize": params.standardize,
        "label_encoding": {"M": 1, "R": 0},
    }


def fold_assignment(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each row's held-out fold under the repeat ``seed``: stratified, shuffled, as the published code draws it."""
    from sklearn.model_selection import StratifiedKFold

    assignment = np.empty(len(labels), dtype=np.int8)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=draw_seed(seed, "split"))
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        assignment[held_out] = fold
    return assignment


def repeat_data(arrays: Arrays, manifest: dict, seed: int, scope: str) -> Arrays:
    """The prepared rows with this repeat's folds (``fold``): the split varies in every scope."""
    return {**arrays, "fold": fold_assignment(arrays["y_train"], int(manifest["folds"]), seed)}


EXPERIMENT = Experiment(
    name="sonar",
    prepare_params=SonarPrepare,
    prepare=prepare,
    raw_dataset="sonar",
    headline_metric="val_accuracy",
    validation_is="held-out CV fold",
    varies={"setup": ("weights", "masks", "split")},
    keeps={
        "setup": "the 208 measured rows (no generator to draw another dataset from), in file order within a "
        "fold: the published loop walks them in order every epoch"
    },
    repeat_data=repeat_data,
)
