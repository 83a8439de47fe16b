"""synthetic (tutorial 001): make_classification and an 80/20 train_test_split, as published."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from regbench.data.experiments import Arrays, Experiment, draw_seed
from regbench.schema import check, positive_int


@dataclass(frozen=True)
class SyntheticPrepare:
    n_samples: int = check(positive_int, "must be a positive integer")
    n_features: int = check(positive_int, "must be a positive integer")
    n_classes: int = check(lambda v: v >= 2, "must be 2 or more")
    random_state: int = 42
    test_size: float = check(lambda v: 0 < v < 1, "must be a fraction in (0, 1)", default=0.2)
    split_random_state: int = 42


def prepare(params: SyntheticPrepare, raw: None) -> tuple[Arrays, dict]:
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

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


def repeat_data(arrays: Arrays, manifest: dict, seed: int, scope: str) -> Arrays:
    """setup: the published draw and split (random_state 42) for every repeat; data: the repeat's own of both."""
    if scope == "setup":
        return arrays
    published = SyntheticPrepare(**manifest["params"])
    drawn = dataclasses.replace(
        published, random_state=draw_seed(seed, "data draw"), split_random_state=draw_seed(seed, "split")
    )
    return prepare(drawn, None)[0]


EXPERIMENT = Experiment(
    name="synthetic",
    prepare_params=SyntheticPrepare,
    prepare=prepare,
    generator="scikit-learn",
    # The tutorial reports model.evaluate on the test set; its per-epoch validation is a split of train.
    headline_metric="test_accuracy",
    validation_is="validation split",
    # Keras' fit shuffles the rows every epoch (its validation split is taken before shuffling: fixed).
    varies={
        "setup": ("weights", "order", "masks"),
        "data": ("weights", "order", "masks", "split", "data draw"),
    },
    keeps={
        "setup": "the published draw and split, make_classification and train_test_split with random_state=42",
        "data": "the generator's settings (1,000 rows, 20 features, 2 classes) and the 80/20 proportions",
    },
    repeat_data=repeat_data,
)
