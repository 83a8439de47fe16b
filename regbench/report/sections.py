"""The report's tables and per-claim lines, as trusted Markdown (``Md``) for the templates.

Numbers go through ``fmt`` (one rule for the Markdown and the HTML page), outside text through ``escape``
or ``code``. The prose around them lives in regbench/report/templates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import numpy as np

from regbench.claims import stats
from regbench.claims.judge import NOT_RUN, Measure, look_levels, per_repeat
from regbench.config import Params
from regbench.data.experiments import registry
from regbench.report.load import NOT_LEARNED_MARGIN, ExperimentResults, Finding, interval
from regbench.report.text import Md, claim_link, code, escape, fmt, label, percent
from regbench.train import records
from regbench.train.plots import METRIC_LABEL

# The seed tutorials, relative to reports/ (report.md and index.html): the repository's parent
# holds shared/ (README: "../shared/experiments.md"), as in a clone with shared/ beside it.
SEEDS_LINK = "../../shared/seeds/"
# Same-seed curves "first differ" at the first epoch they are this far apart (validation cross-entropy):
# float rounding alone keeps two exactly-equivalent runs orders of magnitude closer at first.
SAME_SEED_TOLERANCE = 1e-4
DATA_LOSS = Measure(kind="curve", metric="val_loss", minus="reg_loss")


def _lines(*lines: str) -> Md:
    return Md("\n".join(lines))


def measured(entry: Mapping[str, Any]) -> Md:
    return Md(f"{fmt(entry['mean'])} {interval_text(entry)}") if "mean" in entry else Md("–")


def interval_text(entry: Mapping[str, Any]) -> Md:
    """[low, high]; a claim judged at sequential looks adds its look's level (1 - 2 alpha_k, above 95 %)."""
    level = f" at {percent(entry['confidence'])}" if "confidence" in entry else ""
    return Md(f"[{fmt(entry['ci_low'])}, {fmt(entry['ci_high'])}]{level}")


# --- the first page ------------------------------------------------------------------------


def ours(finding: Finding) -> Md:
    """Our mean with its interval and level, the repeats, and the range of one run where known."""
    if finding.mean is None:
        return Md("not measured")
    where = ""
    if finding.low is not None:
        where = f" [{fmt(finding.low)}, {fmt(finding.high)}] ({percent(finding.level)} interval)"
    one_run = ""
    if finding.one_run_low is not None:
        one_run = f"; one run of ours falls in [{fmt(finding.one_run_low)}, {fmt(finding.one_run_high)}]"
    return Md(f"{fmt(finding.mean)}{where} over {finding.repeats} repeats{one_run}")


def published(finding: Finding) -> Md:
    number = f" ({fmt(finding.published_value)} in the unit measured)" if finding.published_value is not None else ""
    return Md(f"{escape(finding.published)}{number}")


# --- summary -------------------------------------------------------------------------------


def counts(by_label: Mapping[str, int]) -> Md:
    """``{label: count}`` as "**12 reproduced**, **3 undecided**" (labels in the order given, zeros left out)."""
    return Md(", ".join(f"**{count}** {label(name)}" for name, count in by_label.items() if count))


def summary_text(summary: Mapping[str, Any], alpha: float) -> Md:
    """The headline counts: family-wise first (every decision of every claim in one family), per claim after.

    Reads the claims stage's ``family``/``alone`` counts where it writes them, else its older flat counts.
    """
    tested = f"{summary['tested']} of {summary['claims']} claims tested."
    if "family" in summary:
        decisions = summary.get("decisions")
        family = f"all {decisions} decisions of all claims" if decisions else "all decisions of all claims"
        text = (
            f"{tested} Family-wise, with {family} in one Holm family at {fmt(alpha)} (one-sided): "
            f"{counts(summary['family'])}. Each claim judged alone, at {fmt(alpha)}: "
            f"{counts(summary.get('alone', {}))}."
        )
    else:
        text = (
            f"{tested} **{summary['reproduced']}** reproduced, **{summary['refuted']}** refuted, "
            f"**{summary['inconclusive']}** inconclusive. {summary['directional_tested']} of them are directional "
            f"claims with a p-value; across those, {summary['holm_significant']} stay significant at {fmt(alpha)} "
            "(one-sided) after Holm's correction for multiple comparisons."
        )
    if summary.get("family_caveat"):
        text += " " + escape(summary["family_caveat"])
    return Md(text)


def summary_table(evaluation: Mapping[str, Any]) -> Md:
    # `published` is the published figure as the claim's measure, in the measured column's unit
    # (fractions, differences, epochs); the figure as printed in the tutorial is in each claim's section.
    nominal = percent(1 - 2 * evaluation["summary"]["alpha_one_sided"], 0)
    lines = [
        f"| claim | verdict | published (as measured) | measured mean [t interval, {nominal} unless stated] | repeats |"
        " p (one-sided) | p (Holm) | effect size |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for claim_id, entry in evaluation["claims"].items():
        p = fmt(entry["p_value"], 3) if "p_value" in entry else "–"
        p_holm = fmt(entry["p_holm"], 3) if "p_holm" in entry else "–"
        if "p_equivalence" in entry:
            kind = "sameness claim" if entry["test"]["kind"] == "equivalent" else "level claim"
            p, p_holm = f"{fmt(entry['p_equivalence'], 3)} (TOST)", kind
        lines.append(
            f"| {claim_link(claim_id)} | {verdict_text(entry)} | {fmt(entry.get('published_value'))} | "
            f"{measured(entry)} | {entry.get('repeats', 0)} | {p} | {p_holm} | {effect_text(entry)} |"
        )
    return _lines(*lines)


def verdict_text(entry: Mapping[str, Any]) -> Md:
    """The verdict, and for an undecided one how far it is from a decision."""
    text = label(entry["verdict"])
    decision = entry.get("decision")
    if decision:
        if decision.get("stopped") and entry["verdict"] == "undecided":
            text = Md(f"{text} ({escape(decision['stopped'])})")
        return text
    if entry["verdict"] in ("inconclusive", "undecided") and "repeats" in entry and "repeats_needed" in entry:
        needed = entry.get("repeats_needed")
        more = f"; about {needed} needed" if needed else "; no number of repeats would decide at the observed effect"
        last_look = (entry.get("sequential") or {}).get("looks", [None])[-1]
        if needed and last_look is not None and needed > last_look:
            more += f" (more than decide.max_repeats = {last_look})"
        text = Md(f"{text} at {entry['repeats']} repeats{more}")
    return text


def effect_text(entry: Mapping[str, Any]) -> Md:
    if "improvement" not in entry:
        return Md("–")
    share = entry["improvement"]
    d_z = f"d_z {fmt(entry['cohens_dz'], 2)}; " if entry.get("cohens_dz") is not None else ""
    if "count" not in share:
        return Md(f"{d_z}{percent(share['share'], 0)} of repeats on the claimed side")
    return Md(f"{d_z}{fmt(share['count'])}/{entry['repeats']} repeats on the claimed side")


# --- one claim's section ---------------------------------------------------------------------


def _side(test: Mapping[str, Any], role: str) -> str:
    """A variant as a claim names it: a grid member with its grid setting."""
    at = test.get(f"{role}_at")
    name = escape(test[role])
    return name if not at else name + "[" + ", ".join(f"{escape(k)}={fmt(float(v))}" for k, v in at.items()) + "]"


def describe_test(entry: Mapping[str, Any]) -> Md:
    test, measure = entry["test"], entry["measure"]
    what = escape(measure["kind"].replace("_", " ")) + " of " + escape(measure["metric"])
    if "minus" in measure:
        when = "epoch by epoch" if measure["kind"] == "curve" else "at the last epoch"
        what = f"{escape(measure['metric'])} − {escape(measure['minus'])} {when}"
    side = "\\>" if test.get("direction") == "greater" else "\\<"
    if test["kind"] == "paired":
        every = " at every epoch (worst epoch per repeat)" if measure["kind"] == "curve" else ""
        return Md(
            f"{what}: {_side(test, 'variant')} − {_side(test, 'versus')}{every}, paired by seed; "
            f"claim: difference {side} {fmt(test.get('line', 0.0))}"
        )
    if test["kind"] == "interaction":
        return Md(
            f"{what}: ({escape(test['variant'])} − {escape(test['versus'])}) − ({escape(test['base'])} − "
            f"{escape(test['base_versus'])}), a difference of paired differences seed by seed; claim: {side} "
            f"{fmt(test.get('line', 0.0))}"
        )
    if test["kind"] == "equivalent":
        every = " (per repeat: the largest absolute difference over the epochs)" if measure["kind"] == "curve" else ""
        return Md(
            f"{what}: {_side(test, 'variant')} − {_side(test, 'versus')}, paired by seed{every}; claim: the same "
            f"within ±{fmt(test['margin'])} (equivalence, TOST)"
        )
    if test["kind"] == "single":
        return Md(f"{what} of {escape(test['variant'])}; claim: {side} {fmt(test['line'])}")
    band = f"within ±{fmt(test['tolerance'])} of the published {fmt(entry['published_value'])}"
    return Md(f"{what} of {escape(test['variant'])}; claim: {band}")


def claim_lines(entry: Mapping[str, Any], not_learned: Mapping[str, str]) -> Md:
    """The bullet points of one claim's section: source, test, measured values and statistics."""
    source = entry["source"]
    lines = [
        f"- Source: [{code('seeds/' + source)}]({SEEDS_LINK}{quote(source, safe='')}); published: "
        f"{escape(entry['published'])}"
        + (f" (as a number: {fmt(entry['published_value'])})" if entry.get("published_value") is not None else ""),
        f"- Test: {describe_test(entry)}",
    ]
    lines += decision_lines(entry.get("decision"))
    if "mean" in entry:
        lines.append(
            f"- Measured: {measured(entry)} over {entry['repeats']} repeats; per repeat: "
            + ", ".join(fmt(v) for v in entry["values"])
        )
        means = ", ".join(f"{escape(variant)} {fmt(value)}" for variant, value in entry["variant_means"].items())
        lines.append(f"- Mean per variant: {means}")
    if "diverged_runs" in entry:
        left_out = "; ".join(
            f"{escape(variant)}: {left_out_text(seeds)}" for variant, seeds in entry["diverged_runs"].items()
        )
        rests_on = ", ".join(fmt(r) for r in entry.get("repeat_ids", [])) or "none"
        lines.append(
            f"- Rests on seeds {rests_on} only; left out because a run of theirs diverged: {left_out}. "
            f"Diverged means {escape(records.DIVERGENCE_RULE)}."
        )
    if "distance_to_published" in entry:
        inside = "inside" if entry["published_in_interval"] else "outside"
        low, high = entry["band"]
        lines.append(
            f"- The published figure lies {inside} the interval; measured minus published = "
            f"{fmt(entry['distance_to_published'])}. Equivalence with the band [{fmt(low)}, {fmt(high)}] "
            f"({escape(entry['method'])}, two one-sided tests at {fmt(entry['alpha_one_sided'])} each): "
            f"p = {fmt(entry['p_equivalence'], 3)}; p that the mean lies outside it = {fmt(entry['p_outside'], 3)}."
        )
    if "margin" in entry:
        lines.append(
            f"- Sameness within ±{fmt(entry['margin'])} ({escape(entry['method'])}, two one-sided tests at "
            f"{fmt(entry['alpha_one_sided'])} each): p = {fmt(entry['p_equivalence'], 3)}; p that the difference "
            f"lies outside the margin = {fmt(entry['p_outside'], 3)}."
        )
    if "p_value" in entry:
        lines += directional_lines(entry)
    if "decided_by" in entry:
        lines.append(f"- Decided by: {escape(entry['decided_by'])}" + needed_text(entry))
    if "bca_interval" in entry:
        low, high = entry["bca_interval"]
        lines.append(f"- BCa bootstrap interval (for comparison): [{fmt(low)}, {fmt(high)}]")
    if entry.get("reason"):
        lines.append(f"- Note: {escape(entry['reason'])}")
    for variant in (entry["test"].get("variant"), entry["test"].get("versus")):
        run = f"{entry['experiment']}-{variant}"
        if variant and run in not_learned:
            lines.append(f"- **Warning**: {code(run)} did not learn ({escape(not_learned[run])}).")
    return _lines(*lines)


def decision_lines(decision: Mapping[str, Any] | None) -> list[str]:
    """The typed verdict's two questions, its one-run range and where it stopped (regbench.claims.verdict)."""
    if not decision or decision.get("kind") == "not run":
        return []
    lines = [
        f"- Verdict: {label(decision['label'])} family-wise; judged alone: {label(decision['label_alone'])}"
        + (f" (family-wise p {fmt(decision['p_family'], 3)})" if decision.get("p_family") is not None else "")
        + f". Direction: {escape(decision.get('direction', ''))}; size: {escape(decision.get('size', ''))}; "
        f"statistic: {escape(decision.get('statistic', ''))}; unit: {escape(decision.get('unit', ''))}."
    ]
    if decision.get("prediction_low") is not None:
        plausible = decision.get("published_plausible")
        verdict = (
            ""
            if plausible is None
            else f"; the published {fmt(decision.get('published_value'))} lies "
            + ("inside it: one run of this setup could have given it" if plausible else "outside it")
        )
        lines.append(
            f"- One run of ours: [{fmt(decision['prediction_low'])}, {fmt(decision['prediction_high'])}] "
            f"(95% prediction interval){verdict}."
        )
    if decision.get("stopped"):
        chances = "; ".join(
            f"by {int(repeats)} repeats {percent(chance, 0)}" for repeats, chance in decision.get("look_chances") or ()
        )
        lines.append(
            f"- Stopped: {escape(decision['stopped'])}"
            + (f"; chance of deciding the direction at the remaining looks: {chances}" if chances else "")
            + "."
        )
    return lines


def directional_lines(entry: Mapping[str, Any]) -> list[str]:
    side = "above" if entry["test"]["direction"] == "greater" else "below"
    floor = entry.get("sign_flip_floor")
    sequential = (
        f"over its looks (sequential p, the smallest p_k × alpha / alpha_k) {fmt(entry['p_sequential'], 3)}, "
        if "p_sequential" in entry
        else ""
    )
    lines = [
        f"- {escape(entry['method'])}: one-sided p = {fmt(entry['p_value'], 3)} that the mean lies {side} "
        f"{fmt(entry['line'])} (decides at {fmt(entry['alpha_one_sided'])}), {sequential}"
        f"Holm-adjusted {fmt(entry.get('p_holm'), 3)}; exact sign-flip p = "
        f"{fmt(entry.get('p_sign_flip'), 3)} (its smallest possible value at {entry['repeats']} repeats: "
        f"{fmt(floor, 3)})",
    ]
    improvement = entry["improvement"]
    on_side = (
        f"{improvement['count']} of {entry['repeats']} repeats on the claimed side"
        if "count" in improvement
        else f"repeats on the claimed side (ties as one half): {percent(improvement['share'], 0)}"
    )
    d_z = (
        f"Cohen's d_z towards the claim = {fmt(entry['cohens_dz'], 3)}; " if entry.get("cohens_dz") is not None else ""
    )
    lines.append(
        f"- Effect beyond the line {fmt(entry['line'])}: {fmt(entry.get('effect_beyond_line'))} "
        f"(its interval is the measured one, shifted by the line); {d_z}{on_side}"
        + (
            f" ({percent(improvement['share'], 0)}, Clopper-Pearson {fmt(improvement['low'], 2)}–"
            f"{fmt(improvement['high'], 2)})"
            if "low" in improvement and "count" in improvement
            else ""
        )
    )
    smallest = entry.get("smallest_effect") or 0.0
    if entry["verdict"] in ("refuted", "no effect of the published size") and smallest > 0:
        lines.append(
            f"- No effect of the published size: at most {fmt(entry['effect_at_most'])} beyond the line, below "
            f"the smallest effect of interest {fmt(smallest)}"
        )
    elif entry.get("below_smallest_effect"):
        lines.append(
            f"- The effect is real but smaller than the smallest effect of interest {fmt(smallest)}: "
            f"at most {fmt(entry['effect_at_most'])}"
        )
    else:
        lines.append(f"- Smallest effect of interest: {fmt(smallest)} beyond the line")
    if entry.get("mde") is not None:
        lines.append(
            f"- These {entry['repeats']} repeats detect an effect of {fmt(entry['mde'])} "
            f"(d_z {fmt(entry['mde_standardized'], 2)}) with {percent(entry['power'], 0)} power (noncentral t)"
        )
    return lines


def needed_text(entry: Mapping[str, Any]) -> str:
    if entry["verdict"] not in ("inconclusive", "undecided") or "repeats_needed" not in entry:
        return ""
    if entry["repeats_needed"] is None:
        return "; no number of repeats would decide at the observed effect"
    return f"; about {entry['repeats_needed']} repeats would decide it at the observed mean and spread (estimate)"


# --- per experiment ---------------------------------------------------------------------------


def published_table(results: ExperimentResults, published: Mapping[str, Mapping[str, float]], confidence: float) -> Md:
    lines = [
        f"| variant | metric | published | measured mean [{percent(confidence, 0)} interval] | repeats | learned? |",
        "|---|---|---|---|---|---|",
    ]
    for variant in results.single():
        learned = "**no**: see below" if results.did_not_learn(variant) else "yes"
        metrics = list(published.get(variant, {})) or [registry()[results.name].headline_metric]
        for metric in metrics:
            values = results.repeat_finals(variant, variant, metric)
            mean, low, high = interval(values, confidence)
            lines.append(
                f"| {escape(variant)} | {escape(METRIC_LABEL.get(metric, metric))} | "
                f"{fmt(published.get(variant, {}).get(metric))} | {fmt(mean)} [{fmt(low)}, {fmt(high)}] | "
                f"{len(values)} | {learned} |"
            )
    return _lines(*lines)


def not_learned(all_results: Mapping[str, ExperimentResults]) -> dict[str, str]:
    """``experiment-variant`` -> why it did not learn, for every trained variant that did not."""
    flags = {}
    for name, results in all_results.items():
        for variant in results.runs:
            if reason := results.did_not_learn(variant):
                flags[f"{name}-{variant}"] = reason
    return flags


def not_learned_lines(flags: Mapping[str, str], experiment: str | None = None) -> Md:
    chosen = {run: why for run, why in flags.items() if experiment is None or run.startswith(experiment + "-")}
    if not chosen:
        return Md("")
    rule = (
        f"(rule: mean final validation accuracy and inference-mode train accuracy both within "
        f"{NOT_LEARNED_MARGIN:g} of the majority-class rate of their labels)"
    )
    return _lines(
        f"**Did not learn** {rule}:", "", *(f"- {code(run)}: {escape(why)}." for run, why in chosen.items()), ""
    )


def left_out_text(seeds: Mapping[Any, list[str]], shown: int = 2) -> str:
    """``seed 2 (fold 3: loss NaN or infinite at epoch 12)`` per seed; a seed's many runs cut to ``shown``."""
    parts = []
    for seed, reasons in seeds.items():
        why = ", ".join(escape(r) for r in reasons[:shown]) + (
            f" and {len(reasons) - shown} more" if len(reasons) > shown else ""
        )
        parts.append(f"seed {escape(seed)} ({why})")
    return ", ".join(parts)


def diverged_lines(results: ExperimentResults) -> Md:
    """Per variant with a diverged run: how many runs diverged, which repeats are left out and why."""
    lines = []
    for variant, runs in results.runs.items():
        for member in results.members(variant):
            left_out = records.diverged_repeats(runs, member)
            if not left_out:
                continue
            own = [run for run in runs if run.member == member]
            repeats = len({run.seed for run in own})
            name = f"{results.name}-{variant}" + ("" if member == variant else f" {member}")
            lines.append(
                f"- {code(name)}: {sum(run.status != 'ok' for run in own)} of {len(own)} runs diverged; "
                f"{len(left_out)} of {repeats} repeats left out of every mean, curve and verdict: "
                f"{left_out_text(left_out)}."
            )
    if not lines:
        return Md("")
    return _lines(f"**Diverged runs** ({escape(records.DIVERGENCE_RULE)}):", "", *lines, "")


# --- weight decay and L2 -------------------------------------------------------------------------


def weight_decay_pairs(params: Params, experiment: str, evaluation: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(claim id, weight-decay variant, L2 variant) of each sameness claim of ``experiment`` that compares
    decoupled weight decay with an L2 penalty (told apart by their settings, not by names)."""
    variants = params.experiments[experiment].variants
    pairs = []
    for claim_id, entry in evaluation["claims"].items():
        test = entry["test"]
        if entry["experiment"] != experiment or test["kind"] != "equivalent":
            continue
        if test["variant"] not in variants or test["versus"] not in variants:
            continue
        decayed, penalized = (variants[test[key]].members[0].params for key in ("variant", "versus"))
        if decayed.optimizer.weight_decay > 0 and decayed.l2 == 0 and penalized.l2 > 0:
            pairs.append((claim_id, test["variant"], test["versus"]))
    return pairs


def weight_decay_pairs_text(
    results: ExperimentResults, params: Params, evaluation: Mapping[str, Any]
) -> tuple[list[Md], dict[str, dict[str, np.ndarray]]]:
    """Per weight-decay/L2 claim: its settings and verdict in one bullet (with where same-seed curves part),
    and the same-seed curves to draw side by side."""
    bullets: list[Md] = []
    panels: dict[str, dict[str, np.ndarray]] = {}
    for claim_id, decayed, penalized in weight_decay_pairs(params, results.name, evaluation):
        entry = evaluation["claims"][claim_id]
        settings = {v: results.variants[v].members[0].params for v in (decayed, penalized)}
        optimizer = settings[decayed].optimizer
        text = (
            f"- {claim_link(claim_id)} ({label(entry['verdict'])}): {code(decayed)} "
            f"({escape(optimizer.name)}, learning rate {fmt(optimizer.learning_rate)}, weight_decay "
            f"{fmt(optimizer.weight_decay)}) against {code(penalized)} ({escape(settings[penalized].optimizer.name)}, "
            f"L2 {fmt(settings[penalized].l2)}; 2λ = {fmt(2 * settings[penalized].l2)}); measured "
            f"{measured(entry)} against the margin ±{fmt(entry['test']['margin'])}."
        )
        if decayed in results.runs and penalized in results.runs:
            curves = {v: per_repeat(results.runs[v], DATA_LOSS, v) for v in (decayed, penalized)}
            shared = sorted(set(curves[decayed]) & set(curves[penalized]))
            parted = []
            for repeat in shared:
                a, b = curves[decayed][repeat], curves[penalized][repeat]
                gap = np.abs(a[: len(b)] - b[: len(a)])
                beyond = np.flatnonzero(gap > SAME_SEED_TOLERANCE)
                first = f"epoch {beyond[0] + 1}" if len(beyond) else "never"
                parted.append(f"repeat {escape(repeat)}: {first} (largest {fmt(float(gap.max()))})")
            if parted:
                text += (
                    f"\n  Same-seed curves first differ by more than {SAME_SEED_TOLERANCE:g}: "
                    + "; ".join(parted)
                    + "."
                )
            length = min(len(c) for v in curves for c in curves[v].values()) if shared else 0
            panels[f"{optimizer.name}: {decayed} vs {penalized}"] = {
                v: np.asarray([curves[v][r][:length] for r in shared]) for v in (decayed, penalized)
            }
        bullets.append(Md(text))
    return bullets, panels


# --- adaptive repeats, drift, data, provenance ------------------------------------------------------


def looks(params: Params) -> tuple[list[int], list[float]]:
    schedule = look_levels(params.decide, stats.one_sided_alpha(params.claims.confidence))
    return list(schedule), list(schedule.values())


def rounds_table(rounds: Mapping[str, Any]) -> Md:
    """One row per round of ./run.sh decide: runs added, verdict counts, claims grown (no timings: issue 25)."""
    vocabulary = list(dict.fromkeys(c.get("verdict") for r in rounds["rounds"] for c in r["claims"].values()))
    lines = [
        "| round | runs added | " + " | ".join(escape(v) for v in vocabulary) + " | claims grown |",
        "|---" * (3 + len(vocabulary)) + "|",
    ]
    for record in rounds["rounds"]:
        verdicts = [c.get("verdict") for c in record["claims"].values()]
        grown = ", ".join(f"{code(c)} to {step['next_look']}" for c, step in record["plan"].items()) or "none"
        if not record.get("seeds_added"):
            grown = f"none (stopped) {grown if record['plan'] else ''}".strip()
        counts = "".join(f"{verdicts.count(v)} | " for v in vocabulary)
        lines.append(f"| {record['round']} | {record.get('runs_added', 0)} | {counts}{grown} |")
    return _lines(*lines)


def looks_table(evaluation: Mapping[str, Any]) -> Md:
    lines = ["| claim | verdict | repeats | look | mean | interval | note |", "|---|---|---|---|---|---|---|"]
    for claim_id, entry in evaluation["claims"].items():
        sequential = entry.get("sequential")
        if sequential is None:
            continue
        note = escape(entry.get("reason", "")) if entry["verdict"] in ("inconclusive", "undecided") else ""
        lines.append(
            f"| {claim_link(claim_id)} | {label(entry['verdict'])} | {entry.get('repeats', 0)} of "
            f"{sequential.get('repeats_available', '–')} | {sequential.get('decided_at_look') or '–'} | "
            f"{fmt(entry.get('mean'))} | "
            f"{interval_text(entry) if 'ci_low' in entry else ''} | {note} |"
        )
    return _lines(*lines)


def drift_table(drift: Mapping[str, Any]) -> Md:
    moved = {
        claim_id: entry
        for claim_id, entry in drift["claims"].items()
        if entry["verdict_changed"] or (entry["compared"] and not entry["identical"])
    }
    if not moved:
        return Md("")
    lines = [
        "| claim | repeats compared | drift (seed-to-seed sd) | largest difference | verdict: reference -> now |",
        "|---|---|---|---|---|",
    ]
    for claim_id, entry in moved.items():
        compared = entry["compared"]
        lines.append(
            f"| {code(claim_id)} | {compared} | {fmt(entry['drift_in_seed_sd']) if compared else '–'} | "
            f"{fmt(entry['max_abs_difference']) if compared else '–'} | "
            f"{escape(entry['reference_verdict'])} -> {escape(entry['verdict'])} |"
        )
    return _lines(*lines)


def randomness_line(results: ExperimentResults) -> Md:
    """What a repeat's seed varied in this experiment's runs (their manifests), so what its verdicts hold for."""
    scopes = [manifest.get("randomness") for manifest in results.manifests.values()]
    found = [s for s in scopes if s]
    if not found:
        return Md("")
    if any(s != found[0] for s in found):
        return Md(f"**Randomness:** the variants of {code(results.name)} were trained under different scopes.")
    scope = found[0]
    kept = f"; kept in every repeat: {escape(scope['keeps'])}" if scope.get("keeps") else ""
    varies = registry()[results.name].varies
    another = ""
    for other in (s for s in varies if s != scope["scope"]):
        extra = [source for source in varies[other] if source not in scope["varies"]]
        what = f"also varies {', '.join(extra)}" if extra else f"varies only {', '.join(varies[other])}"
        command = f"dvc exp run -S {results.name}.randomness.scope={other}"
        another += f" Under scope {code(other)} a repeat {escape(what)}: {code(command)} (docs/randomness.md)."
    return Md(
        f"**Randomness:** scope {code(scope['scope'])}: a verdict below {escape(scope['covers'])}. "
        f"Each repeat's seed varies {escape(', '.join(scope['varies']))}{kept}.{another}"
    )


def scope_note(evaluation: Mapping[str, Any]) -> Md:
    """For the first page: what the judged claims' repeats varied, so what the verdicts hold for."""
    by_scope: dict[str, set[str]] = {}
    for entry in evaluation["claims"].values():
        scope = (entry.get("randomness") or {}).get("scope")
        if scope is not None:
            by_scope.setdefault(scope, set()).add(entry["experiment"])
    text = []
    if "setup" in by_scope:
        text.append(
            "A repeat varies what the tutorial's own code leaves random (the initial weights, the data order, "
            "dropout masks, sonar's CV split), so a verdict holds for the tutorial's published dataset"
        )
    if "data" in by_scope:
        names = ", ".join(sorted(by_scope["data"]))
        text.append(
            f"under the wider scope of {escape(names)} a repeat also redraws what the tutorial fixed (the "
            "generated data, the train/test split), so a verdict there holds for the data-generating process"
        )
    if not text:
        return Md("")
    joined = "; ".join(text)
    return Md(joined[0].upper() + joined[1:] + ". Each experiment's section says what varied and what was kept.")


def side_text(side: Mapping[str, Any]) -> Md:
    """One claim under one scope: label, scope and what it covers, mean with its interval, repeats."""
    numbers = ""
    if side.get("mean") is not None:
        interval_part = f" {interval_text(side)}" if side.get("ci_low") is not None else ""
        numbers = f"; mean {fmt(side['mean'])}{interval_part}, {side.get('repeats', 0)} repeats"
    about = (side.get("covers") or "").removeprefix("holds for ")
    return Md(f"{label(side['verdict'])} (scope {code(side['scope'])}, about {escape(about)}){numbers}")


def scope_lines(scopes: Mapping[str, Any] | None, claim_id: str) -> Md:
    """The claim's verdict under the other randomness scope (claims.scope_reference), where there is one."""
    compared = (scopes or {}).get("claims", {}).get(claim_id)
    if compared is None:
        return Md("")
    return Md(f"- Under another randomness scope: {side_text(compared['other'])}.")


def scopes_table(scopes: Mapping[str, Any]) -> Md:
    lines = ["| claim | this run | the second scope | same verdict |", "|---|---|---|---|"]
    for claim_id, compared in scopes["claims"].items():
        lines.append(
            f"| {claim_link(claim_id)} | {side_text(compared['here'])} | {side_text(compared['other'])} | "
            f"{'yes' if compared['same_verdict'] else 'no'} |"
        )
    return _lines(*lines)


def data_sources(all_results: Mapping[str, ExperimentResults]) -> list[Md]:
    lines = []
    for name, results in all_results.items():
        if not results.manifests:
            continue
        data = next(iter(results.manifests.values())).get("data_manifest", {})
        source = data.get("source", {})
        origin = source.get("origin") or source.get("url") or source.get("package") or ""
        fallback = " (**fallback**: the declared first choice was not reachable)" if source.get("fallback_used") else ""
        train_rows = data.get("shapes", {}).get("x_train", ["?"])[0]
        note = registry()[name].source_notes.get(source.get("source"))
        subset = f" ({escape(note)})" if note else ""
        lines.append(
            Md(
                f"- **{escape(name)}**: {code(source.get('source', '?'))}{subset} from {code(origin)}{fallback}; "
                f"{escape(train_rows)} training rows"
            )
        )
    return lines


def calibration_rows(evaluation: Mapping[str, Any]) -> list[Md]:
    rows = []
    for repeats, rates in evaluation.get("calibration", {}).items():
        for name, rate in rates.items():
            rows.append(
                Md(
                    f"| {escape(repeats)} | {escape(name)} | {percent(rate['false_reproduced'])} | "
                    f"{percent(rate['coverage'])} | {percent(rate['level_false_reproduced'])} |"
                )
            )
    return rows


def tested(evaluation: Mapping[str, Any]) -> list[str]:
    return [claim_id for claim_id, entry in evaluation["claims"].items() if entry["verdict"] != NOT_RUN]


def provenance(all_results: Mapping[str, ExperimentResults], stage_tag: str) -> dict[str, Any] | None:
    """What produced the results, as deterministic facts only: settings digest, engine, device, library
    versions, seeds and data digests (no timings, timestamps, hosts, paths or run ids: issue 25)."""
    manifests = [m for r in all_results.values() for m in r.manifests.values()]
    if not manifests:
        return None
    first = manifests[0]
    trained = {
        m.get("stage"): {"members": m.get("members"), "seeds": m.get("seeds"), "train": m.get("train")}
        for m in manifests
    }
    digest = hashlib.sha256(json.dumps(trained, sort_keys=True, default=str).encode()).hexdigest()
    versions = first.get("library_versions") or {}
    return {
        "digest": Md(code(digest[:16])),
        "engine": code(first.get("engine", "?")),
        "device": escape(first.get("device", "?")),
        "versions": Md(", ".join(f"{escape(k)} {escape(v)}" for k, v in sorted(versions.items()))),
        "seeds": Md(
            "; ".join(
                f"{escape(name)} {escape(list(next(iter(r.manifests.values())).get('seeds', [])))}"
                for name, r in all_results.items()
                if r.manifests
            )
        ),
        "data": [
            Md(
                f"| {escape(name)} | {escape(data.get('source', {}).get('source', '?'))} | "
                f"{code(str(data.get('content_digest', '?'))[:16] + '…')} |"
            )
            for name, r in all_results.items()
            if r.manifests
            for data in [next(iter(r.manifests.values())).get("data_manifest", {})]
        ],
        # A stage's parent run, found by its tag in whichever store holds it (MLflow's search syntax).
        "stages": [
            (code(m.get("stage", "?")), code(f"regbench/{name}"), code(f"tags.`{stage_tag}` = '{m.get('stage', '?')}'"))
            for name, r in all_results.items()
            for m in r.manifests.values()
        ],
    }
