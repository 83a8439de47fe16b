"""The drift report: same-seed values of this run against a reference run, in seed-to-seed standard deviations."""

from __future__ import annotations

import json
import math

from regbench.claims import drift
from tests.conftest import git


def entry(values, verdict="reproduced", repeat_ids=None):
    found = {"values": values, "verdict": verdict}
    if repeat_ids is not None:
        found["repeat_ids"] = repeat_ids
    return found


def test_identical_values_are_no_drift():
    same = {"a": entry([0.1, 0.2, 0.3]), "b": entry([1.0, 2.0, 4.0])}
    report = drift.compare(same, same, "HEAD")
    assert report["identical"] == 2 and report["verdicts_changed"] == []
    assert report["summary"] == "All 2 compared claims have identical same-seed values; no verdict changed."


def test_drift_is_measured_in_reference_seed_sd_and_verdict_flips_are_named():
    reference = {"a": entry([0.0, 1.0, 2.0]), "b": entry([5.0, 5.0, 5.0], verdict="undecided")}
    current = {"a": entry([0.5, 1.0, 1.5]), "b": entry([5.0, 5.0, 5.0], verdict="contradicted")}
    report = drift.compare(current, reference, "HEAD")
    a = report["claims"]["a"]
    assert math.isclose(a["mean_abs_difference"], 1 / 3) and math.isclose(a["seed_sd"], 1.0)
    assert math.isclose(a["drift_in_seed_sd"], 1 / 3) and not a["identical"]
    assert report["verdicts_changed"] == ["b"] and report["claims"]["b"]["identical"]
    assert report["summary"].startswith("Same-seed values differ from the reference by 0.17 seed-to-seed")
    assert report["summary"].endswith("verdicts changed: b.")


def test_values_pair_by_repeat_and_unpairable_claims_are_skipped():
    reference = {"a": entry([1.0, 2.0, 3.0], repeat_ids=[0, 1, 2]), "c": entry([1.0, 2.0])}
    current = {"a": entry([3.0, 1.0], repeat_ids=[2, 0]), "c": entry([1.0, 2.0, 3.0]), "new": entry([1.0])}
    report = drift.compare(current, reference, "HEAD")
    assert report["claims"]["a"]["compared"] == 2 and report["claims"]["a"]["identical"]
    assert report["claims"]["c"]["compared"] == 0 and "new" not in report["claims"]


def test_reference_from_a_git_revision_or_a_file(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "reports").mkdir()
    detail = {"claims": {"a": entry([1.0, 2.0])}}
    (tmp_path / "reports/claims_detail.json").write_text(json.dumps(detail))
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "results")
    loaded, source = drift.load_reference("HEAD", tmp_path)
    assert loaded == detail and source == "reports/claims_detail.json at git revision HEAD"
    (tmp_path / "other.json").write_text(json.dumps({"claims": {}}))
    assert drift.load_reference("other.json", tmp_path) == ({"claims": {}}, "file other.json")
    missing, why = drift.load_reference("no-such-rev", tmp_path)
    assert missing is None and "no reports/claims_detail.json at git revision 'no-such-rev'" in why
    assert drift.compare({"a": entry([1.0])}, None, why)["summary"] == f"No drift report: {why}."


def test_the_report_shows_the_summary_and_a_row_per_claim_that_moved():
    from regbench.report.build import drift_lines

    reference = {"a": entry([0.0, 1.0, 2.0]), "b": entry([5.0, 5.0, 5.0], verdict="undecided"), "c": entry([1.0])}
    current = {"a": entry([0.5, 1.0, 1.5]), "b": entry([5.0, 5.0, 5.0], verdict="contradicted"), "c": entry([1.0])}
    lines = drift_lines({"drift": drift.compare(current, reference, "reports/claims_detail.json at git revision HEAD")})
    text = "\n".join(lines)
    assert lines[0] == "## Drift against the reference run"
    assert (
        "differ from the reference by 0.11 seed-to-seed standard deviations on average over 3 claims (2 identical)"
        in text
    )
    assert "verdicts changed: b." in text
    assert "| `a` | 3 | 0.3333 | 0.5 | reproduced -> reproduced |" in text
    assert "| `b` | 3 | 0 | 0 | undecided -> contradicted |" in text
    assert "`c`" not in text  # identical values, same verdict: nothing to show
    assert drift_lines({}) == []


def test_reference_by_the_name_of_a_dvc_experiment(tmp_path):
    """`dvc exp run -n data-scope` keeps its commit under refs/exps/<baseline>/data-scope, not as a branch."""
    git(tmp_path, "init", "-q")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/claims_detail.json").write_text(json.dumps({"claims": {"base": entry([1.0])}}))
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "baseline")
    baseline = git(tmp_path, "rev-parse", "HEAD").strip()
    (tmp_path / "reports/claims_detail.json").write_text(json.dumps({"claims": {"exp": entry([2.0])}}))
    git(tmp_path, "commit", "-qam", "experiment")
    git(tmp_path, "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/data-scope", "HEAD")
    git(tmp_path, "reset", "-q", "--hard", baseline)
    loaded, source = drift.load_reference("data-scope", tmp_path, "claims.scope_reference")
    assert loaded == {"claims": {"exp": entry([2.0])}}
    assert source == "reports/claims_detail.json at DVC experiment data-scope"
    missing, why = drift.load_reference("no-such-exp", tmp_path, "claims.scope_reference")
    assert missing is None and why.endswith("(claims.scope_reference)")
