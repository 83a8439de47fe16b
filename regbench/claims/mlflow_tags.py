"""The claims stage's MLflow side: each train stage's parent run tagged with the claims that use it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from regbench.io import read_json


def tag_mlflow_runs(evaluation: Mapping[str, Any], results_dir: Path) -> int:
    """Tag each train stage's MLflow parent run with the ids of the claims that use it.

    Done here, not in the train stage, so that editing the registry never reruns training.
    A run missing from the current tracking store (another MLFLOW_TRACKING_URI) is skipped.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from regbench.train.tracking import tracking_uri

    ids_by_run: dict[str, list[str]] = {}
    for claim_id, entry in evaluation["claims"].items():
        for name in entry["runs"].values():
            if name is not None:
                ids_by_run.setdefault(name, []).append(claim_id)
    client = MlflowClient(tracking_uri())
    tagged = 0
    for name, claim_ids in ids_by_run.items():
        manifest = results_dir / name / "manifest.json"
        run_id = read_json(manifest).get("mlflow", {}).get("parent_run_id") if manifest.exists() else None
        if not run_id:
            continue
        try:
            client.set_tag(run_id, "regbench.claims", ",".join(sorted(claim_ids)))
        except MlflowException:
            continue
        tagged += 1
    return tagged
