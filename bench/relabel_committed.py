"""Old label against new label for every committed claim, from the committed reports/claims_detail.json.

The committed detail file keeps each claim's per-seed contrast values (``values``, paired with
``repeat_ids``: the repeats its old verdict rested on); the train histories are in the DVC cache, which a
plain checkout does not have. So each claim is judged again from those values with the new judge
(regbench.claims.judge, the whole family by regbench.claims.family), with the committed params.yaml's
claims and decide settings. A log-ratio claim needs each variant's own values (not the difference), which
the detail file does not keep: it is listed as not recomputable. Run:

    .venv/bin/python -m bench.relabel_committed [reports/claims_detail.json]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from regbench import config
from regbench.claims import evaluate, family, judge, schema, stats, verdict
from regbench.schema import to_plain


def replay(detail_path: Path) -> tuple[dict, dict]:
    params = config.load()
    registry = schema.load_registry(Path("claims.yaml"))
    old = json.loads(detail_path.read_text())["claims"]
    detail = {}
    for claim in registry.claims:
        entry = old[claim.id]
        base = {k: entry[k] for k in ("experiment", "source", "statement", "published", "published_value", "runs")}
        base["test"] = {k: to_plain(v) for k, v in vars(claim.test).items() if v is not None}
        if claim.statistic == "log_ratio" or "values" not in entry:
            base.update(verdict=verdict.NOT_RUN, reason="log ratio: per-variant values not in the committed detail")
            detail[claim.id] = base
            continue
        # The contrast's value goes in as the first term; every other term is 0 (a sum of signed terms).
        terms = claim.test.terms
        seeds = entry["repeat_ids"]
        values = {t.key: dict.fromkeys(seeds, 0.0) for t in terms}
        values[terms[0].key] = dict(zip(seeds, entry["values"], strict=True))
        flat = dataclasses.replace(claim, measure=dataclasses.replace(claim.measure, kind="final", minus=None))
        if claim.measure.kind == "curve" and claim.measure.metric in ("loss", "val_loss"):
            flat = dataclasses.replace(flat, measure=schema.Measure(kind="final", metric=claim.measure.metric))
        detail[claim.id] = {**base, **judge.judge(flat, values, params.claims, params.decide)}
    alpha = stats.one_sided_alpha(params.claims.confidence)
    decisions = family.apply(detail, alpha)
    return old, {"claims": detail, "summary": family.summary(detail, decisions, alpha)}


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/claims_detail.json")
    old, new = replay(path)
    print("| claim | old | new (family-wise) | new (alone) | repeats | mean [interval] | one run predicts | why |")
    print("|---|---|---|---|---|---|---|---|")
    for claim_id, entry in new["claims"].items():
        d = entry.get("decision", {})
        interval = f"{entry['mean']:.4g} [{entry['ci_low']:.4g}, {entry['ci_high']:.4g}]" if "ci_low" in entry else ""
        predicted = entry.get("prediction_interval")
        predicted = f"[{predicted[0]:.3g}, {predicted[1]:.3g}]" if predicted else ""
        plausible = entry.get("published_plausible")
        if plausible is not None:
            predicted += f" ({entry['published_value']:g}: {'inside' if plausible else 'outside'})"
        print(
            f"| {claim_id} | {old[claim_id]['verdict']} ({old[claim_id].get('repeats')}) | {entry['verdict']} | "
            f"{entry.get('verdict_alone', '')} | {entry.get('repeats', '')} | {interval} | {predicted} | "
            f"{d.get('stopped') or d.get('reason', '')} |"
        )
    print()
    print(evaluate.counts_line(new["summary"]))


if __name__ == "__main__":
    main()
