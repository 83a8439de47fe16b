"""Adaptive repeats: grow the seeds of undecided claims' variants, batch by batch, until every direction is decided.

``./run.sh decide`` (stages/decide.py) loops: ``dvc repro``; read reports/claims_detail.json; for every
claim whose direction (a band claim: its band) is still undecided before its last look, add seeds to the
variants it involves so that it reaches its next look (decide.start, start + batch, ..., max_repeats);
write them to params.yaml; repeat. A claim whose size alone is decided goes on. It stops when no claim
can grow (each is decided or at max_repeats) or before a round that would exceed decide.budget_runs or
decide.budget_seconds.

The verdicts are made by the claims stage from params and results alone (regbench.claims.judge), so a
plain ``dvc repro`` of the final params.yaml reproduces them; this module only chooses seeds. It writes
two files, each atomically (regbench/io.py): params.yaml (comments kept: ruamel.yaml round trip) and
reports/decide_rounds.json (the rounds so far). A round's record is written before params.yaml grows,
and both are whole files, so an interrupted loop leaves a params.yaml that is either the round's old or
its new seeds, and the rounds file says what the next round would add; ``./run.sh decide`` again
continues from there.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from regbench.claims import stats
from regbench.config import Params
from regbench.io import atomic_path, read_json, write_json
from regbench.schema import ParamsError

ROUNDS = Path("reports/decide_rounds.json")
DETAIL = Path("reports/claims_detail.json")
PARAMS = Path("params.yaml")
# What each round keeps of a claim's verdict.
ROUND_KEYS = ("verdict", "verdict_alone", "repeats", "mean", "ci_low", "ci_high", "confidence", "decided_by", "reason")


def next_look(entry: Mapping[str, Any], looks: tuple[int, ...]) -> int | None:
    """The repeats of the claim's next look, or None when its direction is decided, it is not run, or at its
    last look. A claim whose size alone is decided ("no effect of the published size") goes on: the
    direction is the claim, and a small real effect is decided with more repeats."""
    sequential = entry.get("sequential")
    if sequential is None or not sequential["open"]:
        return None
    reached = sequential["history"][-1]["repeats"] if sequential["history"] else 0
    return next(n for n in looks if n > reached)


def plan_round(params: Params, detail: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The seeds to add, per claim still undecided: {claim id: {experiment, variants, add, new_seeds}}.

    A claim at n usable common repeats whose next look is at n' needs n' - n more. It gets the next
    seeds above the largest seed its variants have in common, the same for every variant of the claim
    (so they pair); a variant that already has one trains nothing for it. Seeds only ever grow upwards,
    so the first n_k common seeds of every earlier look stay what they were.
    """
    looks = stats.look_schedule(params.decide.start, params.decide.batch, params.decide.max_repeats)
    plan: dict[str, dict[str, Any]] = {}
    for claim_id, entry in detail["claims"].items():
        target = next_look(entry, looks)
        if target is None:
            continue
        experiment = params.experiments[entry["experiment"]]
        variants = sorted(entry["runs"])
        common = set.intersection(*(set(experiment.seeds_of(v)) for v in variants))
        add = target - entry["sequential"]["repeats_available"]
        if add <= 0:
            continue  # the seeds are in params.yaml already; this round's dvc repro trains them
        start = max(common, default=-1) + 1
        plan[claim_id] = {
            "experiment": experiment.name,
            "variants": variants,
            "next_look": target,
            "add": add,
            "new_seeds": list(range(start, start + add)),
        }
    return plan


def grown_seeds(params: Params, plan: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, str], list[int]]:
    """The new seed list of every variant the plan touches (sorted; only variants that gain seeds)."""
    grown: dict[tuple[str, str], set[int]] = {}
    for step in plan.values():
        experiment = params.experiments[step["experiment"]]
        for variant in step["variants"]:
            seeds = grown.setdefault((experiment.name, variant), set(experiment.seeds_of(variant)))
            seeds.update(step["new_seeds"])
    return {
        key: sorted(seeds)
        for key, seeds in grown.items()
        if len(seeds) > len(params.experiments[key[0]].seeds_of(key[1]))
    }


def new_runs(params: Params, grown: Mapping[tuple[str, str], list[int]]) -> int:
    """Runs (variant x seed; folds and grid members count once) the grown seed lists add."""
    return sum(len(seeds) - len(params.experiments[e].seeds_of(v)) for (e, v), seeds in grown.items())


def write_seeds(path: Path, grown: Mapping[tuple[str, str], list[int]]) -> None:
    """Set <experiment>.variants.<variant>.seeds in params.yaml, keeping its comments and layout."""
    yaml = YAML()  # round-trip mode: comments, key order and flow style survive
    yaml.preserve_quotes = True
    yaml.width = 4096
    # ruamel writes None as an empty value by default; params.yaml spells it null.
    yaml.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    with path.open() as handle:
        document = yaml.load(handle)
    for (experiment, variant), seeds in grown.items():
        variants = document[experiment]["variants"]
        if not variants.get(variant):
            # `baseline: {}` stays one line: `baseline: {seeds: [...]}`.
            variants[variant] = CommentedMap()
            variants[variant].fa.set_flow_style()
        flow = CommentedSeq(seeds)
        flow.fa.set_flow_style()
        variants[variant]["seeds"] = flow
    with atomic_path(path) as temporary, temporary.open("w") as handle:
        yaml.dump(document, handle)


def round_record(number: int, detail: Mapping[str, Any], seconds: float, plan: Mapping[str, Any]) -> dict[str, Any]:
    claims = {
        claim_id: {key: entry[key] for key in ROUND_KEYS if key in entry}
        | {"look": (entry.get("sequential") or {}).get("decided_at_look")}
        for claim_id, entry in detail["claims"].items()
    }
    return {"round": number, "repro_seconds": round(seconds, 3), "claims": claims, "plan": dict(plan)}


def load_rounds(path: Path) -> dict[str, Any]:
    return read_json(path) if path.exists() else {"rounds": [], "stopped": None}


def stop_reason(params: Params, rounds: list[Mapping[str, Any]], adding: int, plan: Mapping[str, Any]) -> str | None:
    """Why the loop stops before training the next round, or None to go on."""
    if not plan:
        return "every claim is decided, not run, or at decide.max_repeats"
    budget = params.decide
    spent_runs = sum(r.get("runs_added", 0) for r in rounds)
    spent_seconds = sum(r["repro_seconds"] for r in rounds)
    if budget.budget_runs is not None and spent_runs + adding > budget.budget_runs:
        return f"decide.budget_runs = {budget.budget_runs}: {spent_runs} runs added, the next round needs {adding}"
    if budget.budget_seconds is not None and spent_seconds >= budget.budget_seconds:
        return f"decide.budget_seconds = {budget.budget_seconds}: {spent_seconds:.0f} s of dvc repro spent"
    return None


def dvc_repro() -> None:
    subprocess.run(["dvc", "repro"], check=True)


def run(
    load_params: Callable[[], Params],
    repro: Callable[[], None] = dvc_repro,
    params_path: Path = PARAMS,
    rounds_path: Path = ROUNDS,
    detail_path: Path = DETAIL,
    max_rounds: int | None = None,
) -> dict[str, Any]:
    """The decide loop (see the module docstring); returns the rounds file's content."""
    params = load_params()
    if not params.decide.sequential:
        raise ParamsError(
            "params.yaml: decide.sequential = False: ./run.sh decide looks at the claims after every batch, "
            "which needs the sequential verdicts; set decide.sequential: true"
        )
    history = load_rounds(rounds_path)
    while True:
        started = time.monotonic()
        repro()
        seconds = time.monotonic() - started
        params = load_params()
        detail = read_json(detail_path)
        plan = plan_round(params, detail)
        grown = grown_seeds(params, plan)
        adding = new_runs(params, grown)
        record = round_record(len(history["rounds"]) + 1, detail, seconds, plan)
        reason = stop_reason(params, history["rounds"], adding, plan)
        if reason is None and max_rounds is not None and record["round"] >= max_rounds:
            reason = f"--max-rounds {max_rounds}"
        record["runs_added"] = 0 if reason else adding
        record["seeds_added"] = {} if reason else {f"{e}-{v}": s for (e, v), s in grown.items()}
        history["rounds"].append(record)
        history["stopped"] = reason
        # The record first: if the loop dies before params.yaml grows, rerunning replans the same seeds.
        write_json(rounds_path, history)
        if reason:
            # The report stage depends on the rounds file: this repro redraws only the report.
            repro()
            return history
        write_seeds(params_path, grown)
        print(f"decide: round {record['round']}: {len(plan)} claims undecided, {adding} new runs", flush=True)
