"""How far this run's per-repeat values moved from a reference run's: the drift report.

The same seeds give bit-identical results on one machine but not across machines: another CPU picks other
kernels, which round differently, and training amplifies that. A rerun elsewhere then differs in every
number, and ``dvc metrics diff`` alone cannot say whether any of it matters. This module compares each
claim's per-repeat values with those of a reference run (by default the ``claims_detail.json`` committed
at ``HEAD``), seed by seed, in units of the reference's seed-to-seed standard deviation, and says whether
any verdict changed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from regbench.io import read_json

DETAIL_PATH = "reports/claims_detail.json"


def load_reference(
    reference: str | None, repo_root: Path, setting: str = "claims.drift_reference"
) -> tuple[dict[str, Any] | None, str]:
    """A claims evaluation to compare with, and a description of where it came from (or why there is none).

    ``reference`` is a path to a ``claims_detail.json`` when such a file exists, else a git revision or the
    name of a DVC experiment (``dvc exp run -n <name>``; its commit lives under refs/exps) whose committed
    ``reports/claims_detail.json`` is read; None turns the comparison off. ``setting`` names the params key.
    """
    if reference is None:
        return None, f"no reference configured ({setting}: null)"
    path = repo_root / reference
    if path.is_file():
        return read_json(path), f"file {reference}"
    revision, kind = reference, "git revision"
    experiment = _experiment_ref(reference, repo_root)
    if experiment is not None:
        revision, kind = experiment, "DVC experiment"
    try:
        shown = _git(repo_root, "show", f"{revision}:{DETAIL_PATH}")
    except (OSError, subprocess.CalledProcessError):
        return None, f"no {DETAIL_PATH} at {kind} {reference!r} ({setting})"
    try:
        return json.loads(shown), f"{DETAIL_PATH} at {kind} {reference}"
    except json.JSONDecodeError:
        return None, f"{DETAIL_PATH} at {kind} {reference!r} is not valid JSON"


def _git(repo_root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo_root, capture_output=True, text=True, check=True).stdout


def _experiment_ref(name: str, repo_root: Path) -> str | None:
    """The git ref of the newest DVC experiment called ``name`` (refs/exps/<baseline>/<name>), unless ``name``
    is a revision already."""
    try:
        _git(repo_root, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
        return None
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        refs = _git(repo_root, "for-each-ref", "--sort=-committerdate", "--format=%(refname)", "refs/exps/").split()
    except (OSError, subprocess.CalledProcessError):
        return None
    # DVC keeps its own refs (refs/exps/exec/..., refs/exps/celery/...) beside the experiments'.
    matches = [ref for ref in refs if ref.rsplit("/", 1)[-1] == name and not ref.startswith("refs/exps/exec/")]
    return matches[0] if matches else None


def _paired(current: Mapping[str, Any], reference: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The two runs' values of the same repeats (seeds), or None if they cannot be paired."""
    now, before = current.get("values"), reference.get("values")
    if not now or not before:
        return None
    ids_now, ids_before = current.get("repeat_ids"), reference.get("repeat_ids")
    if ids_now is not None and ids_before is not None:
        common = sorted(set(ids_now) & set(ids_before))
        if not common:
            return None
        index_now = {repeat: position for position, repeat in enumerate(ids_now)}
        index_before = {repeat: position for position, repeat in enumerate(ids_before)}
        return (
            np.array([now[index_now[r]] for r in common], float),
            np.array([before[index_before[r]] for r in common], float),
        )
    if len(now) != len(before):
        return None
    return np.asarray(now, float), np.asarray(before, float)


def compare_claim(current: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """One claim: mean |same-seed difference| in seed-to-seed standard deviations, and the verdicts."""
    entry: dict[str, Any] = {"verdict": current.get("verdict"), "reference_verdict": reference.get("verdict")}
    entry["verdict_changed"] = entry["verdict"] != entry["reference_verdict"]
    pairs = _paired(current, reference)
    if pairs is None:
        return {**entry, "compared": 0, "reason": "no common repeats to compare"}
    now, before = pairs
    differences = now - before
    spread = float(np.std(before, ddof=1)) if len(before) > 1 else 0.0
    mean_shift = float(np.mean(np.abs(differences)))
    # With no seed-to-seed spread to compare with, any move at all is off the scale.
    off_scale = 0.0 if mean_shift == 0 else float("inf")
    in_sd = mean_shift / spread if spread > 0 else off_scale
    return {
        **entry,
        "compared": len(differences),
        "identical": bool(np.all(differences == 0)),
        "mean_abs_difference": mean_shift,
        "max_abs_difference": float(np.max(np.abs(differences))),
        "seed_sd": spread,
        "drift_in_seed_sd": in_sd,
    }


def compare(
    current: Mapping[str, Mapping[str, Any]], reference: Mapping[str, Mapping[str, Any]] | None, source: str
) -> dict[str, Any]:
    """Every claim both runs judged; a one-line summary in words."""
    if reference is None:
        return {"reference": source, "claims": {}, "summary": f"No drift report: {source}."}
    claims = {
        claim_id: compare_claim(entry, reference[claim_id])
        for claim_id, entry in current.items()
        if claim_id in reference and entry.get("values") and reference[claim_id].get("values")
    }
    compared = [c for c in claims.values() if c["compared"]]
    changed = sorted(claim_id for claim_id, c in claims.items() if c["verdict_changed"])
    finite = [c["drift_in_seed_sd"] for c in compared if np.isfinite(c["drift_in_seed_sd"])]
    identical = sum(c["identical"] for c in compared)
    if not compared:
        summary = f"No claim could be compared with the reference ({source})."
    elif identical == len(compared):
        summary = f"All {len(compared)} compared claims have identical same-seed values"
    else:
        average = float(np.mean(finite)) if finite else float("inf")
        summary = (
            f"Same-seed values differ from the reference by {average:.2g} seed-to-seed standard deviations on "
            f"average over {len(compared)} claims ({identical} identical)"
        )
    if compared:
        summary += f"; verdicts changed: {', '.join(changed)}." if changed else "; no verdict changed."
    return {
        "reference": source,
        "claims": claims,
        "compared": len(compared),
        "identical": identical,
        "verdicts_changed": changed,
        "mean_drift_in_seed_sd": float(np.mean(finite)) if finite else None,
        "summary": summary,
    }
