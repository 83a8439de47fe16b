"""What the claims stage shows outside its reports: a DVC metric per claim and an MLflow claims run.

- ``metrics/claims/<claim id>.json``: the claim's headline verdict as a code (2 reproduced, 1 reproduced
  but smaller than published, 0 undecided, -1 no effect of the published size, -2 contradicted:
  regbench.claims.verdict.LABEL_CODES) and its mean. The same two keys in every file, so
  `dvc metrics show` lists one claim per row, and `dvc metrics diff` names the claim whose verdict moved.
  Claims of variants that did not run have no file.
- One MLflow run per run of the stage in the experiment ``regbench/claims``: each verdict as a tag
  ``verdict.<claim id>``, each mean as a metric ``mean.<claim id>``, the family-wise counts as metrics
  ``family.<label>``, and the
  two claims files as artifacts. Every train stage's parent run it judged gets the tags
  ``regbench.claims`` (the claim ids) and ``regbench.claims_run`` (this run's id), found by their
  tags in the current store, so the link holds in any clone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from regbench.claims.evaluate import counts_line
from regbench.claims.verdict import LABEL_CODES, NOT_RUN
from regbench.io import atomic_directory, write_json
from regbench.train import provenance
from regbench.train.tracking import (
    CLAIMS_EXPERIMENT,
    CLAIMS_RUN_TAG,
    NOTE_TAG,
    STAGE_TAG,
    Tracker,
    git_tags,
    run_name,
    stage_parent_runs,
)

METRICS_DIR = Path("metrics/claims")


def verdict_metrics(evaluation: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per claim that ran: its verdict code and mean (six significant digits)."""
    rows = {}
    for claim_id, entry in evaluation["claims"].items():
        if entry["verdict"] == NOT_RUN:
            continue
        row: dict[str, Any] = {"verdict": LABEL_CODES[entry["verdict"]]}
        mean = entry.get("mean")
        if isinstance(mean, int | float) and math.isfinite(mean):
            row["mean"] = float(f"{mean:.6g}")
        rows[claim_id] = row
    return rows


def write_metrics(evaluation: Mapping[str, Any], directory: Path = METRICS_DIR) -> int:
    """``directory``/<claim id>.json for every claim that ran, replacing the folder whole; how many."""
    rows = verdict_metrics(evaluation)
    with atomic_directory(directory) as scratch:
        for claim_id, row in rows.items():
            write_json(scratch / f"{claim_id}.json", row)
    return len(rows)


def log_claims_run(evaluation: Mapping[str, Any], files: list[Path], uri: str | None = None) -> tuple[str, int]:
    """The stage's MLflow claims run, linked from the parent runs it judged; its id and how many it linked."""
    tracker = Tracker(CLAIMS_EXPERIMENT, uri, source="stages/claims.py")
    context = provenance.dvc_context()
    claims = evaluation["claims"]
    summary = evaluation["summary"]
    ran = {cid: entry for cid, entry in claims.items() if entry["verdict"] != NOT_RUN}
    tags = {
        STAGE_TAG: "claims",
        NOTE_TAG: counts_line(summary),
        **git_tags(provenance.git_revision()),
        **{f"verdict.{cid}": str(entry["verdict"]) for cid, entry in claims.items()},
    }
    if context.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = context["DVC_EXP_NAME"]
    run_id = tracker.start(run_name("claims", context), tags=tags, params={})
    try:
        metrics = {f"mean.{cid}": entry["mean"] for cid, entry in ran.items() if _finite(entry.get("mean"))}
        metrics.update({f"summary.{k}": v for k, v in summary.items() if _finite(v) and not isinstance(v, bool)})
        # MLflow metric keys allow letters, digits, spaces and _-./ only: "reproduced, smaller than published"
        # loses its comma.
        metrics.update({f"family.{label.replace(',', '')}": n for label, n in summary["family"].items()})
        tracker.log_history(run_id, {}, metrics)
        for path in files:
            if path.exists():
                tracker.log_artifact(run_id, path)
        linked = _link_parents(tracker, claims, run_id)
    except BaseException:
        tracker.end(run_id, status="FAILED")
        raise
    tracker.end(run_id)
    return run_id, linked


def _link_parents(tracker: Tracker, claims: Mapping[str, Any], run_id: str) -> int:
    ids_by_stage: dict[str, list[str]] = {}
    for claim_id, entry in claims.items():
        for name in (entry.get("runs") or {}).values():
            if name is not None:
                ids_by_stage.setdefault(name, []).append(claim_id)
    parents = stage_parent_runs(tracker.client, sorted(ids_by_stage))
    for stage, parent in parents.items():
        tracker.set_tags(
            parent.info.run_id,
            {"regbench.claims": ",".join(sorted(ids_by_stage[stage])), CLAIMS_RUN_TAG: run_id},
        )
    return len(parents)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def publish(evaluation: Mapping[str, Any], files: list[Path]) -> str:
    """Write the claims metrics and log the claims run; the stage's line about both."""
    written = write_metrics(evaluation)
    run_id, linked = log_claims_run(evaluation, files)
    return f"{written} claim metrics in {METRICS_DIR}/; MLflow claims run {run_id} linked from {linked} parent runs"
