"""Prepared datasets on disk: one ``arrays.npz`` and one ``manifest.json`` per experiment.

Arrays are stored compactly (IMDB as index lists, MNIST pixels as uint8) and
turned into model inputs when loaded. The manifest records shapes, class
balance, the data source, a content digest and the params that made them;
every later stage copies it into its own records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regbench.io import atomic_path, read_json, write_json
from regbench.data.sparse import BinaryCsr

ARRAYS = "arrays.npz"
MANIFEST = "manifest.json"
Matrix = np.ndarray | BinaryCsr


@dataclass
class PreparedData:
    """Model-ready arrays: ``x_train``/``y_train``, ``x_test``/``y_test`` and optional ``fold``."""

    arrays: dict[str, Matrix]
    manifest: dict[str, Any] = field(default_factory=dict)
    # The experiment's randomness scope (``<experiment>.randomness.scope``): what ``for_repeat`` redraws.
    randomness: str = "setup"

    def __getitem__(self, key: str) -> Matrix:
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in self.arrays


def for_repeat(data: PreparedData, seed: int) -> PreparedData:
    """The arrays one repeat trains on: what its seed varies in the data under ``data.randomness``.

    The experiment's ``repeat_data`` (regbench/data/experiments/): sonar's CV folds in every scope, a
    generated dataset or a train/test split under scope ``data``; else the prepared arrays themselves.
    """
    from regbench.data.experiments import registry

    if "experiment" not in data.manifest:
        return data  # arrays made in memory, not by a prepare stage: no experiment, nothing to redraw
    experiment = registry()[data.manifest["experiment"]]
    if data.randomness not in experiment.varies:
        raise ValueError(
            f"{experiment.name}: randomness scope {data.randomness!r} is not one this experiment supports "
            f"({list(experiment.varies)})"
        )
    if experiment.repeat_data is None:
        return data
    arrays = experiment.repeat_data(data.arrays, data.manifest, seed, data.randomness)
    return PreparedData(arrays=arrays, manifest=data.manifest, randomness=data.randomness)


def content_digest(arrays: dict[str, Matrix]) -> str:
    """sha256 over every array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        for part_name, part in _parts(name, arrays[name]):
            part = np.ascontiguousarray(part)
            digest.update(f"{part_name}|{part.dtype.str}|{part.shape}\n".encode())
            digest.update(part.tobytes())
    return digest.hexdigest()


def _parts(name: str, value: Matrix) -> list[tuple[str, np.ndarray]]:
    if isinstance(value, BinaryCsr):
        return [
            (f"{name}.indptr", value.indptr),
            (f"{name}.indices", value.indices),
            (f"{name}.n_columns", np.asarray(value.n_columns, dtype=np.int64)),
        ]
    return [(name, value)]


def describe(arrays: dict[str, Matrix]) -> dict[str, Any]:
    """Shapes, dtypes and class balance, for the manifest."""
    info: dict[str, Any] = {"shapes": {}, "dtypes": {}, "class_balance": {}}
    for name, value in arrays.items():
        info["shapes"][name] = list(value.shape)
        info["dtypes"][name] = "binary-csr" if isinstance(value, BinaryCsr) else value.dtype.str
        if name.startswith("y_"):
            labels = value.argmax(axis=1) if value.ndim == 2 else value.astype(int)
            classes, counts = np.unique(labels, return_counts=True)
            info["class_balance"][name] = {str(int(c)): int(n) for c, n in zip(classes, counts, strict=True)}
    if isinstance(arrays.get("x_train"), BinaryCsr):
        x_train = arrays["x_train"]
        info["nonzero_per_row_train"] = round(x_train.nnz / max(len(x_train), 1), 2)
        info["density_train"] = round(x_train.nnz / max(x_train.shape[0] * x_train.shape[1], 1), 5)
    return info


def save(directory: Path, arrays: dict[str, Matrix], manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the arrays and a manifest that adds their description and content digest.

    A NaN or infinite value would make every run of the experiment diverge at its first epoch with no word
    about the data, so it stops the prepare stage here, naming the array.
    """
    for name, value in arrays.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            bad = np.argwhere(~np.isfinite(value))
            raise ValueError(
                f"prepared {name} has {len(bad)} NaN or infinite value(s), first at index {bad[0].tolist()}: "
                "the raw data holds a value that is not a finite number; fix or replace the raw file"
            )
    flat = {}
    for name, value in arrays.items():
        flat.update(dict(_parts(name, value)))
    full_manifest = {**manifest, **describe(arrays), "content_digest": content_digest(arrays)}
    with atomic_path(directory / ARRAYS) as temporary, temporary.open("wb") as handle:
        np.savez_compressed(handle, **flat)
    write_json(directory / MANIFEST, full_manifest)
    return full_manifest


def load(directory: str | Path, *, verify: bool = True, randomness: str = "setup") -> PreparedData:
    """Load model-ready arrays; ``verify`` recomputes the content digest against the manifest.

    ``randomness``: the experiment's randomness scope, which ``for_repeat`` draws each repeat's arrays by.
    """
    directory = Path(directory)
    if not (directory / MANIFEST).exists():
        raise FileNotFoundError(f"{directory / MANIFEST} not found: run `dvc repro prepare@{directory.name}` first")
    manifest = read_json(directory / MANIFEST)
    stored: dict[str, Matrix] = {}
    with np.load(directory / ARRAYS) as archive:
        names = {key.split(".")[0] for key in archive.files}
        for name in names:
            if f"{name}.indptr" in archive.files:
                stored[name] = BinaryCsr(
                    indptr=archive[f"{name}.indptr"],
                    indices=archive[f"{name}.indices"],
                    n_columns=int(archive[f"{name}.n_columns"]),
                )
            else:
                stored[name] = archive[name]
    if verify and content_digest(stored) != manifest["content_digest"]:
        raise ValueError(
            f"{directory}: arrays do not match the manifest's content digest; "
            f"rerun `dvc repro -f prepare@{directory.name}`"
        )
    return PreparedData(arrays=_model_ready(stored, manifest), manifest=manifest, randomness=randomness)


def _model_ready(stored: dict[str, Matrix], manifest: dict[str, Any]) -> dict[str, Matrix]:
    scale = manifest.get("x_scale")
    ready: dict[str, Matrix] = {}
    for name, value in stored.items():
        if isinstance(value, BinaryCsr) or name == "fold":
            ready[name] = value
        elif name.startswith("x_") and scale is not None:
            ready[name] = value.astype(np.float32) * np.float32(scale)
        else:
            ready[name] = value.astype(np.float32)
    return ready
