"""./run.sh decide: seed planning, the params.yaml edit, the budgets, and the loop end to end on real DVC."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from regbench import config
from regbench.claims import decide
from tests.conftest import REPO_ROOT, PipelineSpec, real_params, without_variant_seeds

# Labels whose direction is undecided: the decide loop grows these claims.
OPEN = ("undecided", "no effect of the published size")


def params_with(seeds: dict[str, list[int]] | None = None, **decide_settings) -> config.Params:
    raw = without_variant_seeds(real_params())
    raw["decide"].update({"sequential": True, **decide_settings})
    for variant, variant_seeds in (seeds or {}).items():
        raw["circles"]["variants"][variant] = {**(raw["circles"]["variants"][variant] or {}), "seeds": variant_seeds}
    return config.parse(raw)


def entry(verdict: str, variants: list[str], available: int, reached: int | None, at_max: bool = False) -> dict:
    history = [] if reached is None else [{"look": 1, "repeats": reached, "verdict": verdict}]
    open_ = verdict in ("undecided", "no effect of the published size") and not at_max
    sequential = {"repeats_available": available, "history": history, "at_max_repeats": at_max, "open": open_}
    return {"experiment": "circles", "verdict": verdict, "runs": dict.fromkeys(variants), "sequential": sequential}


def test_only_undecided_claims_grow_to_their_next_look_with_the_next_common_seeds():
    params = params_with({"dropout": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}, start=5, batch=5, max_repeats=20)
    detail = {
        "claims": {
            "decided": entry("reproduced", ["overfit"], 5, 5),
            "at_max": entry("undecided", ["maxnorm"], 20, 20, at_max=True),
            # Its size is decided, its direction is not: it goes on (the direction is the claim).
            "paired": entry("no effect of the published size", ["dropout", "overfit"], 5, 5),
            "not_run": {"experiment": "circles", "verdict": "not run", "runs": {"input_dropout": None}},
        }
    }
    plan = decide.plan_round(params, detail)
    assert list(plan) == ["paired"] and plan["paired"]["new_seeds"] == [5, 6, 7, 8, 9]
    grown = decide.grown_seeds(params, plan)
    # dropout has seeds 5-9 already: only overfit grows, and the pairs are on seeds 0-9.
    assert grown == {("circles", "overfit"): [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
    assert decide.new_runs(params, grown) == 5


def test_the_budgets_stop_before_a_round_that_would_exceed_them():
    params = params_with(budget_runs=12, budget_seconds=100.0)
    rounds = [{"repro_seconds": 40.0, "runs_added": 10}]
    assert decide.stop_reason(params, rounds, 2, {"c": {}}) is None
    assert "budget_runs = 12" in decide.stop_reason(params, rounds, 3, {"c": {}})
    assert "budget_seconds" in decide.stop_reason(params, [*rounds, {"repro_seconds": 60.0}], 0, {"c": {}})
    assert "every claim is decided" in decide.stop_reason(params, rounds, 0, {})


def test_growing_seeds_keeps_params_yaml_comments_and_validates(tmp_path):
    path = tmp_path / "params.yaml"
    # The committed params without the seeds a real ./run.sh decide grew: every variant on its experiment's list.
    text = (REPO_ROOT / "params.yaml").read_text()
    text = re.sub(r"\{seeds: \[[0-9, ]*\]\}", "{}", re.sub(r", seeds: \[[0-9, ]*\]", "", text))
    path.write_text(re.sub(r"(?m)^      seeds: \[[0-9, ]*\]\n", "", text))  # a block-style variant's
    before = path.read_text()
    decide.write_seeds(path, {("circles", "dropout"): [0, 1, 2, 3, 4, 5], ("sonar", "baseline"): [0, 1, 2, 3, 4, 5]})
    after = path.read_text()
    comments = [line for line in before.splitlines() if line.lstrip().startswith("#")]
    assert comments == [line for line in after.splitlines() if line.lstrip().startswith("#")]
    assert "    dropout: {hidden_dropout: 0.4, seeds: [0, 1, 2, 3, 4, 5]}" in after
    assert "    baseline: {seeds: [0, 1, 2, 3, 4, 5]}" in after
    loaded = config.load(path)
    assert loaded.experiments["circles"].seeds_of("dropout") == (0, 1, 2, 3, 4, 5)
    assert loaded.experiments["circles"].seeds_of("overfit") == (0, 1, 2, 3, 4)
    # Nothing else changed: the two variant lines differ, every other line is as it was.
    changed = [(b, a) for b, a in zip(before.splitlines(), after.splitlines(), strict=True) if b != a]
    assert len(changed) == 2


def test_decide_refuses_without_sequential_verdicts():
    raw = copy.deepcopy(real_params())
    raw["decide"]["sequential"] = False
    with pytest.raises(ValueError, match="decide.sequential"):
        decide.run(lambda: config.parse(raw), repro=lambda: None)


@pytest.mark.pipeline
def test_decide_end_to_end_grows_undecided_claims_and_a_plain_repro_reproduces_the_verdicts(make_pipeline):
    runs = {"circles": ["overfit", "dropout", "maxnorm"]}
    sequential = dict(sequential=True, start=3, batch=1, max_repeats=4, budget_runs=None, budget_seconds=None)
    spec = PipelineSpec(runs, epochs=2, seeds=(0, 1, 2), change=lambda raw: raw["decide"].update(sequential))
    pipeline = make_pipeline(spec, "decide")
    repo = pipeline.repo
    # A fresh loop: the committed rounds (the real run's) would be continued and counted against the budget.
    (repo / "reports/decide_rounds.json").write_text(json.dumps({"rounds": [], "stopped": None}) + "\n")
    env = pipeline.env()
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "stages.decide"], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((repo / "reports/decide_rounds.json").read_text())
    rounds = history["rounds"]
    assert rounds and history["stopped"]
    for record in rounds[:-1]:
        undecided = {
            v for c, e in record["claims"].items() if c in record["plan"] for v in record["plan"][c]["variants"]
        }
        assert set(record["seeds_added"]) <= {f"circles-{v}" for v in undecided}
        assert all(record["claims"][c]["verdict_alone"] in OPEN for c in record["plan"])
    assert rounds[-1]["seeds_added"] == {}
    final = yaml.safe_load((repo / "params.yaml").read_text())
    # No circles claim uses maxnorm: it keeps the experiment's seeds.
    assert "seeds" not in (final["circles"]["variants"]["maxnorm"] or {})
    detail = json.loads((repo / "reports/claims_detail.json").read_text())["claims"]
    tested = {c: e for c, e in detail.items() if e["verdict"] != "not run"}
    for claim_id, claim in tested.items():
        assert claim["verdict_alone"] not in OPEN or claim["sequential"]["at_max_repeats"], claim_id
        assert claim_id in rounds[-1]["claims"] and rounds[-1]["claims"][claim_id]["verdict"] == claim["verdict"]
    assert "## Adaptive repeats" in (repo / "reports/report.md").read_text()
    assert pipeline.dvc("status", "--json").stdout.strip() in ("{}", "")
    print(f"decide loop: {len(rounds)} rounds in {time.monotonic() - started:.0f} s")
    # A clean copy with the final params.yaml: one plain dvc repro gives the same verdicts and values.
    clean = make_pipeline(spec, "clean").repo
    shutil.copy(repo / "params.yaml", clean / "params.yaml")
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=clean, env=env, check=True, capture_output=True)
    again = json.loads((clean / "reports/claims_detail.json").read_text())["claims"]
    for claim_id, claim in tested.items():
        assert again[claim_id]["verdict"] == claim["verdict"]
        assert again[claim_id]["values"] == claim["values"]
        assert again[claim_id]["sequential"]["history"] == claim["sequential"]["history"]
