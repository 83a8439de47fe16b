"""Claims: the measure vocabulary on hand-made histories, verdict logic on constructed data, the registry."""

import dataclasses
import re

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from regbench import config
from regbench.claims import evaluate, family, measures, schema, stats, verdict
from regbench.claims import judge as judging
from regbench.schema import ParamsError
from regbench.train.records import EPOCH_METRICS, Run
from tests.conftest import REPO_ROOT, real_params

SETTINGS = config.ClaimsParams(confidence=0.95, bootstrap_resamples=2000, bootstrap_seed=0, min_repeats=3)
# The verdict rules changed from a percentile bootstrap to Student t / TOST (regbench.claims.stats): constructed data
# below keep their verdicts; expectations were only added (method, decided_by, effect sizes, repeats needed).


def run_with(repeat=0, fold=None, status="ok", finals=None, **curves) -> Run:
    series = {m: np.asarray(curves.get(m, [0.0, 0.0, 0.0]), float) for m in EPOCH_METRICS}
    return Run("v", repeat, fold, status, series, finals or {}, seed=repeat)


def measure(kind, run, metric="val_loss", **extra):
    return measures.measure(run, schema.Measure(kind=kind, metric=metric, **extra))


def test_measures_on_a_hand_made_history():
    # Validation loss falls to its minimum at epoch 3, then rises by 0.3 over 2 epochs.
    run = run_with(val_loss=[0.9, 0.6, 0.4, 0.5, 0.7], val_accuracy=[0.5, 0.7, 0.8, 0.75, 0.72])
    assert measure("final", run) == pytest.approx(0.7)
    assert measure("best", run) == pytest.approx(0.4)
    assert measure("best_epoch", run) == 3
    assert measure("best_epoch", run, metric="val_accuracy", mode="max") == 3
    assert measure("rise_after_best", run) == pytest.approx(0.15)
    assert measure("drop_after_peak", run, metric="val_accuracy") == pytest.approx(0.08)
    assert measure("variability", run) == pytest.approx(np.mean(np.abs(np.diff([0.9, 0.6, 0.4, 0.5, 0.7], n=2))))
    np.testing.assert_allclose(measure("curve", run), [0.9, 0.6, 0.4, 0.5, 0.7])


def test_rise_after_best_is_zero_when_the_minimum_is_the_last_epoch_and_variability_ignores_trends():
    falling = run_with(val_loss=[0.9, 0.7, 0.5, 0.3])
    assert measure("rise_after_best", falling) == 0.0
    assert measure("variability", falling) == pytest.approx(0.0)  # a straight line is not erratic
    zigzag = run_with(val_loss=[0.5, 0.9, 0.4, 0.8, 0.3])
    assert measure("variability", zigzag) > 0.5


def test_gap_and_final_read_inference_mode_evaluations():
    run = run_with(val_accuracy=[0.6, 0.75], finals={"train_eval_accuracy": 1.0})
    gap = schema.Measure(kind="gap", metric="train_eval_accuracy", minus="val_accuracy")
    assert measures.measure(run, gap) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="test_accuracy"):
        measure("final", run, metric="test_accuracy")


def test_per_repeat_averages_folds_and_drops_a_repeat_with_a_diverged_run():
    runs = [
        run_with(0, 0, val_accuracy=[0.5, 0.8]),
        run_with(0, 1, val_accuracy=[0.5, 0.6]),
        run_with(1, 0, val_accuracy=[0.5, 0.9]),
        run_with(1, 1, status="diverged", val_accuracy=[0.5]),
    ]
    values = measures.per_repeat(runs, schema.Measure(kind="final", metric="val_accuracy"))
    assert values == {0: pytest.approx(0.7)}


def claim(
    kind="paired", direction="greater", line=0.0, tolerance=None, published_value=None, measure="final", smallest=0.0
):
    test = schema.Test(
        kind=kind,
        variant="a",
        versus="b" if kind == "paired" else None,
        direction=None if kind == "level" else direction,
        line=line,
        tolerance=tolerance,
        smallest_effect=None if kind == "level" else smallest,
    )
    metric = "loss" if measure == "curve" else "val_accuracy"
    return schema.Claim(
        "x.claim",
        "sonar",
        "s.txt",
        "statement",
        "pub",
        schema.Measure(kind=measure, metric=metric),
        test,
        published_value,
    )


def values(*numbers):
    return dict(enumerate(numbers))


def test_a_clear_effect_the_claimed_way_is_reproduced_and_the_opposite_contradicted():
    better = {"a": values(0.86, 0.88, 0.85, 0.87, 0.89), "b": values(0.80, 0.81, 0.79, 0.82, 0.80)}
    result = judging.judge(claim(direction="greater"), better, SETTINGS)
    assert result["verdict_alone"] == "reproduced" and result["ci_low"] > 0 and result["repeats"] == 5
    assert result["mean"] == pytest.approx(0.066)
    assert result["decided_by"] == "interval beyond the line" and result["method"] == "Student t"
    assert result["p_value"] < 0.025 and result["p_sign_flip"] == pytest.approx(1 / 32)
    assert result["improvement"]["share"] == 1.0 and result["cohens_dz"] > 3
    opposite = judging.judge(claim(direction="less"), better, SETTINGS)
    assert (
        opposite["verdict_alone"] == "contradicted"
        and opposite["decided_by"] == "interval on the wrong side of the line"
    )


def test_overlapping_distributions_are_inconclusive():
    noisy = {"a": values(0.86, 0.78, 0.85, 0.79, 0.84), "b": values(0.80, 0.83, 0.81, 0.84, 0.80)}
    result = judging.judge(claim(direction="greater", smallest=0.05), noisy, SETTINGS)
    assert result["ci_low"] < 0 < result["ci_high"] and result["verdict_alone"] == "undecided"
    # How far from a decision: what these repeats can detect (the chances at later looks need decide).
    assert result["mde"] > abs(result["mean"]) and result["stopped"] == "" and result["look_chances"] == []


def test_an_interval_below_the_smallest_effect_of_interest_is_no_effect_of_the_published_size():
    small = {"a": values(0.802, 0.805, 0.801, 0.806, 0.803), "b": values(0.80, 0.80, 0.80, 0.80, 0.80)}
    # A published +0.06: the default smallest effect is half of it; the measured +0.003 is real but far smaller.
    published = schema.Claim(
        "x.claim",
        "sonar",
        "s.txt",
        "statement",
        "pub",
        schema.Measure(kind="final", metric="val_accuracy"),
        schema.Test(kind="paired", variant="a", versus="b", direction="greater"),
        0.06,
    )
    assert measures.smallest_effect(published) == pytest.approx(0.03)
    result = judging.judge(published, small, SETTINGS)
    # A real effect, shown smaller than half the published one: its direction holds, so it is reproduced.
    assert result["verdict_alone"] == "reproduced, smaller than published" and result["below_smallest_effect"]
    nothing = {"a": values(0.80, 0.79, 0.81, 0.80, 0.805), "b": values(0.80, 0.80, 0.80, 0.80, 0.80)}
    result = judging.judge(published, nothing, SETTINGS)
    assert result["verdict_alone"] == "no effect of the published size"
    assert result["decided_by"] == "interval contains the line and lies below the smallest effect of interest"
    assert result["effect_at_most"] < 0.03


def test_identical_repeats_are_judged_by_the_exact_sign_flip_test():
    # Five identical differences: the t statistic is undefined; the exact test cannot go below 1/32 > 0.025.
    same = {"a": values(0.9, 0.9, 0.9, 0.9, 0.9), "b": values(1.0, 1.0, 1.0, 1.0, 1.0)}
    result = judging.judge(claim(direction="less"), same, SETTINGS)
    assert result["verdict_alone"] == "undecided" and result["p_value"] == pytest.approx(1 / 32)
    assert result["method"] == "exact sign-flip (no spread)"
    six = {"a": values(*[0.9] * 6), "b": values(*[1.0] * 6)}
    assert judging.judge(claim(direction="less"), six, SETTINGS)["verdict_alone"] == "reproduced"


def test_too_few_repeats_is_inconclusive_whatever_the_interval():
    two = {"a": values(0.9, 0.91), "b": values(0.5, 0.52)}
    result = judging.judge(claim(), two, SETTINGS)
    assert result["verdict_alone"] == "undecided" and "only 2 repeats" in result["reason"]
    assert result["decisions"] == {}


def test_level_claim_inside_and_outside_the_band():
    near = {"a": values(0.84, 0.85, 0.86, 0.85, 0.845)}
    inside = judging.judge(claim("level", tolerance=0.025, published_value=0.85), near, SETTINGS)
    assert inside["verdict_alone"] == "reproduced" and inside["published_in_interval"]
    assert inside["method"] == "TOST, Student t" and inside["p_equivalence"] < 0.025
    assert inside["distance_to_published"] == pytest.approx(-0.001)
    far = {"a": values(0.70, 0.71, 0.69, 0.70, 0.72)}
    outside = judging.judge(claim("level", tolerance=0.025, published_value=0.85), far, SETTINGS)
    assert outside["verdict_alone"] == "contradicted" and not outside["published_in_interval"]
    wide = {"a": values(0.80, 0.87, 0.76, 0.90, 0.83)}
    assert judging.judge(claim("level", tolerance=0.025, published_value=0.85), wide, SETTINGS)["verdict_alone"] == (
        "undecided"
    )


def test_a_curve_claim_must_hold_at_every_epoch():
    # Repeats differ a little (identical repeats would leave only the sign-flip test, whose floor at 4
    # repeats is 1/16: inconclusive, see test_identical_repeats_are_judged_by_the_exact_sign_flip_test).
    above = {
        "a": {r: np.array([1.0, 0.8, 0.6]) + 0.1 + 0.01 * r for r in range(4)},
        "b": {r: np.array([1.0, 0.8, 0.6]) for r in range(4)},
    }
    assert judging.judge(claim(measure="curve"), above, SETTINGS)["verdict_alone"] == "reproduced"
    crossing = {"a": {r: np.array([0.9, 0.9, 0.7]) + 0.01 * r for r in range(4)}, "b": above["b"]}
    assert judging.judge(claim(measure="curve"), crossing, SETTINGS)["verdict_alone"] == "contradicted"


def test_holm_adjusts_step_down_and_stays_monotone():
    adjusted = family.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


def test_bca_is_reported_from_enough_repeats_and_seeded():
    rng = np.random.default_rng(0)
    many = {"a": values(*rng.normal(0.1, 0.05, 20)), "b": values(*[0.0] * 20)}
    first = judging.judge(claim(), many, SETTINGS)
    assert first["bca_interval"] == judging.judge(claim(), many, SETTINGS)["bca_interval"]
    assert first["bca_interval"][0] > 0
    few = {"a": values(*rng.normal(0.1, 0.05, 5)), "b": values(*[0.0] * 5)}
    assert "bca_interval" not in judging.judge(claim(), few, SETTINGS)


def test_a_claim_without_a_published_effect_must_declare_its_smallest_effect(tmp_path):
    raw = yaml.safe_load((REPO_ROOT / "claims.yaml").read_text())
    del raw["claims"][1]["test"]["smallest_effect"]
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"claims\[1\].test.smallest_effect .*declare the smallest effect"):
        schema.load_registry(path)


# The claim catalogue beside the repository (README: "../shared/experiments.md"): a table row per claim.
CATALOGUE = REPO_ROOT.parent / "shared" / "experiments.md"
CATALOGUE_ROW = re.compile(r"^\| ([a-z0-9_]+\.[a-z0-9_]+) \|", re.MULTILINE)


def undeclared_catalogue_claims(ids: list[str], catalogue: str) -> list[str]:
    """The catalogue's claims missing from ``ids``. A claim of one's own, not in the catalogue, is fine
    (README: Add a claim); a catalogue claim must be declared under its catalogue id."""
    return sorted(set(CATALOGUE_ROW.findall(catalogue)) - set(ids))


def test_the_registry_declares_every_catalogued_claim():
    registry = schema.load_registry(REPO_ROOT / "claims.yaml")
    ids = [c.id for c in registry.claims]
    assert ids and len(set(ids)) == len(ids)
    if CATALOGUE.exists():
        catalogue = CATALOGUE.read_text()
        catalogued = CATALOGUE_ROW.findall(catalogue)
        assert catalogued, f"{CATALOGUE}: no claim rows found (has its table changed?)"
        assert undeclared_catalogue_claims(ids, catalogue) == []
        # The README's recipe adds claims of one's own beside them; a catalogue claim left out is caught.
        assert undeclared_catalogue_claims([*ids, "circles.my_own_claim"], catalogue) == []
        assert undeclared_catalogue_claims([i for i in ids if i != catalogued[0]], catalogue) == [catalogued[0]]
    params = config.parse(real_params())
    for entry in registry.claims:
        for variant in entry.variants:
            assert variant in params.experiments[entry.experiment].variants, (entry.id, variant)


def test_a_registry_typo_names_the_file_and_key(tmp_path):
    raw = yaml.safe_load((REPO_ROOT / "claims.yaml").read_text())
    raw["claims"][0]["test"]["direction"] = "bigger"
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"claims.yaml: claims\[0\].test.direction = 'bigger': must be one of"):
        schema.load_registry(path)
    raw = yaml.safe_load((REPO_ROOT / "claims.yaml").read_text())
    raw["claims"][1]["measure"] = {"kind": "best_epoch", "metric": "test_accuracy"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="needs a per-epoch metric"):
        schema.load_registry(path)


def test_claims_of_unconfigured_variants_are_reported_as_not_run(tmp_path):
    raw = real_params()
    del raw["circles"]
    raw["train"]["runs"] = {k: v for k, v in raw["train"]["runs"].items() if not k.startswith("circles")}
    params = config.parse(raw)
    evaluation = evaluate.evaluate(schema.load_registry(REPO_ROOT / "claims.yaml"), params, tmp_path)
    assert evaluation["claims"]["circles.overfit_gap"]["verdict"] == verdict.NOT_RUN
    assert "not in params.yaml" in evaluation["claims"]["circles.overfit_gap"]["reason"]
    assert evaluation["summary"]["tested"] == 0
    view = evaluate.metrics_view(evaluation)
    assert view["claims"]["imdb.bigger_noisier"] == {
        "verdict": verdict.NOT_RUN,
        "verdict_code": None,
        "verdict_alone": verdict.NOT_RUN,
    }
    assert dataclasses.is_dataclass(schema.load_registry(REPO_ROOT / "claims.yaml"))


def test_a_claim_names_the_repeats_left_out_because_a_run_diverged(tmp_path):
    from regbench.train import records

    def stage(name, accuracies, diverged_repeat=None):
        runs = []
        for repeat, accuracy in enumerate(accuracies):
            status = "diverged" if repeat == diverged_repeat else "ok"
            record = {"member": name.split("-")[1], "grid_value": None, "repeat": repeat, "seed": repeat}
            record.update(fold=None, status=status, diverged_epoch=None, epochs=2, seconds=0.0, mlflow_run_id=None)
            record.update(train_eval_accuracy=accuracy)
            curves = {m: np.asarray([0.5, accuracy]) for m in EPOCH_METRICS}
            runs.append(records.Run(record["member"], repeat, None, status, curves, {}, None, repeat, record))
        (tmp_path / name).mkdir()
        records.write(tmp_path / name, runs)

    stage("circles-overfit", [0.70, 0.75, 0.72, 0.76, 0.74])
    stage("circles-dropout", [0.80, 0.86, 0.81, 0.83, 0.84], diverged_repeat=2)
    evaluation = evaluate.evaluate(
        schema.load_registry(REPO_ROOT / "claims.yaml"), config.parse(real_params()), tmp_path
    )
    entry = evaluation["claims"]["circles.dropout_raises_test"]
    assert entry["repeat_ids"] == [0, 1, 3, 4] and entry["diverged_repeats"] == {"dropout": [2]}
    # Four repeats, before the first look (decide.start = 5): no test made, so the family has none of it.
    assert entry["decisions"] == {} and entry["p_holm"] == 1.0 and entry["verdict"] == "undecided"
    assert entry["stopped"] == "before the first look" and entry["sequential"]["open"]
    assert entry["decision"]["stopped"] == "before the first look"
    assert evaluate.metrics_view(evaluation)["claims"]["circles.dropout_raises_test"]["repeats_left_out_diverged"] == 1


# --- equivalence, interaction and grid members (issue 18) ------------------------------------------------


def sameness(margin=0.03, measure="final"):
    metric = "val_loss" if measure == "curve" else "val_accuracy"
    return schema.Claim(
        "x.same",
        "circles",
        "s.txt",
        "statement",
        "pub",
        schema.Measure(kind=measure, metric=metric),
        schema.Test(kind="equivalent", variant="a", versus="b", margin=margin),
    )


def shifted(repeats, *changes):
    return {r: v + d for (r, v), d in zip(repeats.items(), changes, strict=True)}


def test_equivalence_inside_outside_and_straddling_the_margin():
    base = values(0.80, 0.82, 0.79, 0.81, 0.80)
    inside = {"a": shifted(base, 0.004, -0.003, 0.002, 0.0, -0.001), "b": base}
    result = judging.judge(sameness(), inside, SETTINGS)
    assert result["verdict_alone"] == "reproduced" and -0.03 < result["ci_low"] < result["ci_high"] < 0.03
    assert result["decided_by"] == "interval inside the band" and result["p_equivalence"] < 0.025
    assert result["method"] == "TOST, Student t" and result["band"] == [-0.03, 0.03]
    outside = {"a": {r: v - 0.1 + 0.002 * r for r, v in base.items()}, "b": base}
    result = judging.judge(sameness(), outside, SETTINGS)
    assert result["verdict_alone"] == "contradicted" and result["ci_high"] < -0.03
    assert result["decided_by"] == "interval outside the band"
    straddling = {"a": shifted(base, 0.0, 0.05, -0.01, 0.04, 0.02), "b": base}
    result = judging.judge(sameness(), straddling, SETTINGS)
    assert result["verdict_alone"] == "undecided" and result["ci_low"] < 0.03 < result["ci_high"]
    assert result["decided_by"] == "interval straddles a band edge"
    # A wider margin turns the same values into a reproduced sameness: the margin is the claim.
    assert judging.judge(sameness(margin=0.1), straddling, SETTINGS)["verdict_alone"] == "reproduced"


def test_curve_sameness_judges_each_repeats_largest_per_epoch_difference():
    b = {r: np.array([0.7, 0.5, 0.4, 0.45]) + 0.01 * r for r in range(5)}
    # Equal at the end, apart by 0.05 or 0.06 at epoch 2 (alternating sign: the mean difference there is small).
    a = {r: b[r] + np.array([0.0, (-1) ** r * (0.05 + 0.002 * r), 0.0, 0.0]) for r in range(5)}
    result = judging.judge(sameness(0.03, "curve"), {"a": a, "b": b}, SETTINGS)
    np.testing.assert_allclose(result["values"], [0.05, 0.052, 0.054, 0.056, 0.058])
    assert result["verdict_alone"] == "contradicted"
    close = {r: b[r] + np.array([0.0, 0.001 * r, -0.002, 0.0]) for r in range(5)}
    assert judging.judge(sameness(0.03, "curve"), {"a": close, "b": b}, SETTINGS)["verdict_alone"] == "reproduced"


def interaction(smallest=0.02):
    return schema.Claim(
        "x.interaction",
        "sonar",
        "s.txt",
        "statement",
        "pub",
        schema.Measure(kind="final", metric="val_accuracy"),
        schema.Test(
            kind="interaction",
            variant="big_drop",
            versus="big",
            base="drop",
            base_versus="plain",
            direction="greater",
            smallest_effect=smallest,
        ),
    )


def test_an_interaction_is_a_difference_of_paired_differences_seed_by_seed():
    plain = values(0.80, 0.84, 0.78, 0.82, 0.81)
    drop = {r: v + 0.02 for r, v in plain.items()}  # dropout gains 0.02 on the small network
    big = values(0.78, 0.80, 0.83, 0.79, 0.80)
    with_effect = {r: v + 0.08 + 0.003 * r for r, v in big.items()}  # and 0.08 or so on the big one
    result = judging.judge(interaction(), {"big_drop": with_effect, "big": big, "drop": drop, "plain": plain}, SETTINGS)
    np.testing.assert_allclose(result["values"], [0.06, 0.063, 0.066, 0.069, 0.072])
    assert result["verdict_alone"] == "reproduced" and result["ci_low"] > 0
    assert set(result["variant_means"]) == {"big_drop", "big", "drop", "plain"}
    # The same gain on both networks: the seed-to-seed level differences cancel, no interaction is left.
    no_effect = {r: v + 0.02 + (-1) ** r * 0.001 for r, v in big.items()}
    result = judging.judge(interaction(), {"big_drop": no_effect, "big": big, "drop": drop, "plain": plain}, SETTINGS)
    assert abs(result["mean"]) < 0.002 and result["verdict_alone"] == "no effect of the published size"


def test_claims_name_grid_members_by_their_grid_value(tmp_path):
    from regbench.train import records

    params = config.parse(real_params())
    grid = params.experiments["circles"].variants["dropout_grid"]
    runs = []
    for member in grid.members:
        for repeat in range(5):
            # Final test accuracy 0.8 - rate / 2, plus a little seed noise: rate 0.8 is 0.2 below rate 0.4.
            accuracy = 0.8 - member.grid_value / 2 + 0.003 * ((repeat * 7 + int(member.grid_value * 10)) % 5)
            record = {"member": member.label, "grid_value": member.grid_value, "repeat": repeat, "seed": repeat}
            record.update(fold=None, status="ok", diverged_epoch=None, epochs=2, seconds=0.0, mlflow_run_id=None)
            curves = {m: np.asarray([0.5, accuracy]) for m in EPOCH_METRICS}
            runs.append(records.Run(member.label, repeat, None, "ok", curves, {}, member.grid_value, repeat, record))
    (tmp_path / "circles-dropout_grid").mkdir()
    records.write(tmp_path / "circles-dropout_grid", runs)
    registry = schema.load_registry(REPO_ROOT / "claims.yaml")
    evaluation = evaluate.evaluate(registry, params, tmp_path)
    high = evaluation["claims"]["circles.rate_too_high_underlearns"]
    assert high["verdict_alone"] == "reproduced" and high["mean"] == pytest.approx(-0.2, abs=0.02)
    assert set(high["variant_means"]) == {"dropout_grid[hidden_dropout=0.8]", "dropout_grid[hidden_dropout=0.4]"}
    low = evaluation["claims"]["circles.rate_too_low_no_effect"]
    # 0.05 is beyond the 0.03 margin.
    assert low["mean"] == pytest.approx(-0.05, abs=0.02) and low["verdict_alone"] == "contradicted"
    assert low["test"]["variant_at"] == {"hidden_dropout": 0.1}

    def judged_with(**test):
        changed = dataclasses.replace(registry.claims[-8], test=dataclasses.replace(registry.claims[-8].test, **test))
        return evaluate.evaluate(schema.Registry(claims=(changed,)), params, tmp_path)

    with pytest.raises(ParamsError, match=r"has no member with hidden_dropout = 0.15; its values: \[0.0, 0.1"):
        judged_with(variant_at={"hidden_dropout": 0.15})
    with pytest.raises(ParamsError, match="is a grid over hidden_dropout, not l2"):
        judged_with(variant_at={"l2": 0.1})
    with pytest.raises(ParamsError, match="names grid variant dropout_grid without a member: add variant_at"):
        judged_with(variant_at=None)


@pytest.mark.parametrize(
    ("test", "message"),
    [
        ({"kind": "equivalent", "variant": "a", "versus": "b"}, "'margin' is required for equivalent"),
        ({"kind": "equivalent", "variant": "a", "versus": "b", "margin": -0.1}, "margin = -0.1: must be a positive"),
        ({"kind": "equivalent", "variant": "a", "margin": 0.1}, "'versus' is required"),
        ({"kind": "equivalent", "variant": "a", "versus": "b", "margin": 0.1, "direction": "less"}, "'direction'"),
        ({"kind": "interaction", "variant": "a", "versus": "b", "direction": "greater"}, "'base' and 'base_versus'"),
        ({"kind": "paired", "variant": "a", "versus": "b", "direction": "less", "base": "c"}, "'base' and"),
        ({"kind": "single", "variant": "a", "versus_at": {"x": 0.1}, "direction": "less"}, "'versus_at' names"),
        (
            {"kind": "paired", "variant": "a", "versus": "b", "direction": "less", "variant_at": {"x": 1, "y": 2}},
            "name one grid setting",
        ),
    ],
)
def test_new_test_kinds_are_validated_with_the_key_to_fix(tmp_path, test, message):
    raw = yaml.safe_load((REPO_ROOT / "claims.yaml").read_text())
    raw["claims"][0]["test"] = test
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=message):
        schema.load_registry(path)


# --- sequential looks (decide.sequential) ------------------------------------------------------

DECIDE = config.DecideParams(sequential=True, start=5, batch=5, max_repeats=15, spending="pocock")


def test_sequential_verdict_takes_the_first_deciding_look_on_the_first_common_repeats():
    rng = np.random.default_rng(3)
    # Repeat keys are seeds: b lacks seed 2, so the pairs are on seeds 0, 1, 3, 4, ...
    a = {seed: 0.8 + 0.05 + 0.01 * rng.standard_normal() for seed in range(12)}
    b = {seed: 0.8 + 0.01 * rng.standard_normal() for seed in range(12) if seed != 2}
    result = judging.judge(claim(), {"a": a, "b": b}, SETTINGS, DECIDE)
    sequential = result["sequential"]
    assert result["verdict_alone"] == "reproduced" and sequential["decided_at_look"] == 1
    assert result["repeat_ids"] == [0, 1, 3, 4, 5] and sequential["repeats_available"] == 11
    # The look's exact level, not the full alpha: the interval is wider than the fixed-n 95 % one.
    assert result["confidence"] == pytest.approx(1 - 2 * sequential["look_levels"][0])
    assert result["stopped"] == "decided at look 1 of 3 (5 repeats)"
    fixed = judging.judge(claim(), {"a": {s: a[s] for s in (0, 1, 3, 4, 5)}, "b": b}, SETTINGS)
    assert result["ci_high"] - result["ci_low"] > fixed["ci_high"] - fixed["ci_low"]


def test_sequential_verdict_waits_for_a_look_and_reports_max_repeats_undecided():
    noise = {seed: 0.01 * np.sin(seed * 1.7) for seed in range(20)}
    few = judging.judge(claim(smallest=1.0), {"a": dict(list(noise.items())[:4]), "b": {}}, SETTINGS, DECIDE)
    assert few["verdict_alone"] == "undecided" and "fewer than decide.start" in few["reason"]
    paired = {"a": noise, "b": dict.fromkeys(range(20), 0.0)}
    result = judging.judge(claim(), paired, SETTINGS, DECIDE)
    # Seeds 15-19 lie beyond the last look: never used.
    assert result["verdict_alone"] == "undecided" and result["repeats"] == 15
    assert result["sequential"]["at_max_repeats"] and not result["sequential"]["open"]
    assert result["stopped"] == "undecided at the last look (decide.max_repeats = 15 repeats)"
    assert [look["repeats"] for look in result["sequential"]["history"]] == [5, 10, 15]


def test_a_claim_stopped_before_its_last_look_says_so_and_gives_its_chances_at_the_remaining_looks():
    rng = np.random.default_rng(4)
    paired = {"a": {s: 0.803 + 0.01 * rng.standard_normal() for s in range(10)}, "b": dict.fromkeys(range(10), 0.8)}
    result = judging.judge(claim(smallest=0.05), paired, SETTINGS, DECIDE)
    assert result["verdict_alone"] in ("undecided", "no effect of the published size")
    assert result["sequential"]["open"] and "stopped at 10 repeats, before the look at 15" in result["stopped"]
    ((repeats, chance),) = result["look_chances"]
    assert repeats == 15 and 0 <= chance <= 1


def test_a_direction_undecided_claim_goes_on_after_its_size_is_decided():
    """The old rule stopped as soon as "the effect is below half the published one" was shown; the direction
    is the claim, so the look goes on and a small real effect is then established."""
    small = {s: 0.006 + 0.008 * np.sin(s * 2.1) for s in range(15)}
    paired = {"a": small, "b": dict.fromkeys(range(15), 0.0)}
    result = judging.judge(claim(smallest=0.05), paired, SETTINGS, DECIDE)
    history = result["sequential"]["history"]
    assert history[0]["smaller than the smallest effect"] <= history[0]["level"]  # size decided at look 1
    assert result["verdict_alone"] == "reproduced, smaller than published" and len(history) >= 2


def test_holm_takes_each_decisions_sequential_p():
    rng = np.random.default_rng(2)
    clear = {"a": {s: 0.85 + 0.01 * rng.standard_normal() for s in range(15)}, "b": dict.fromkeys(range(15), 0.8)}
    reproduced = judging.judge(claim(), clear, SETTINGS, DECIDE)
    decision = reproduced["decisions"]["direction reproduced"]
    increments = reproduced["sequential"]["look_alphas"]
    assert decision["p_family"] == pytest.approx(decision["p_by_look"][0] * 0.025 / increments[0])
    assert decision["decided_alone"] and decision["p_family"] < 0.025


def test_the_family_caveat_counts_the_sign_flip_floor_against_each_looks_alpha():
    fixed = family.family_caveat([5, 5], 22, 0.025, 16)
    assert "below 0.03125 (1/2^5)" in fixed and "no claim can be" in fixed and "needs at least 10 repeats" in fixed
    assert family.family_caveat([10], 22, 0.025, 16) is None


# --- no vacuous claim (issue 24) ------------------------------------------------------------------


def flat_run(repeat: int, shift: float = 0.0, epochs: int = 30) -> Run:
    """A run that learns nothing: every curve flat, test accuracy flickering by one example of 70 from epoch
    to epoch (seeded by the repeat, so every variant of a seed flickers alike)."""
    flicker = np.random.default_rng(repeat).integers(-1, 2, epochs) / 70.0
    curves = {
        "loss": np.full(epochs, 0.7) + shift,
        "val_loss": 0.7 - flicker + shift,
        "accuracy": np.full(epochs, 0.5) + shift,
        "val_accuracy": 0.5 + flicker + shift,
        "reg_loss": np.full(epochs, 0.01),
    }
    finals = {
        "train_eval_accuracy": 0.5 + flicker[-1] + shift,
        "train_eval_loss": 0.7 + shift,
        "test_accuracy": 0.5 + flicker[-1] + shift,
        "test_loss": 0.7 + shift,
    }
    return Run("v", repeat, None, "ok", curves, finals, seed=repeat)


def flat_values(claim: schema.Claim, repeats: int = 10) -> dict[str, dict[int, object]]:
    """Every term of the claim measured on flat runs, its variant shifted onto the claim's null: a sameness claim
    one margin away, a paired claim with a line (non-inferiority) onto that line; otherwise every variant the
    same (no effect). A single value is flat."""
    values = {}
    for term in claim.test.terms:
        shift = 0.0
        if term.sign > 0 and term.key == claim.test.terms[0].key:
            if claim.test.kind == "equivalent":
                shift = claim.test.margin
            elif claim.test.kind in ("paired", "interaction"):
                shift = claim.test.line
        values[term.key] = {r: measures.measure(flat_run(r, shift), claim.measure) for r in range(repeats)}
    return values


# The sign-flip p shown beside the t test samples 2^exact_max sign patterns beyond exact_max repeats: few here.
FAST = dataclasses.replace(SETTINGS, sign_flip_exact_max=8)
DECIDE_20 = config.DecideParams(sequential=True, start=5, batch=5, max_repeats=20, spending="pocock")
REPRODUCING = ("reproduced", "reproduced, smaller than published")


def test_every_catalogued_claim_fails_on_a_flat_input():
    """No claim can hold by construction: on runs that learn nothing (flat curves with one-example flicker;
    every variant alike, or a sameness claim one margin apart) none is reproduced, fixed or adaptive."""
    registry = schema.load_registry(REPO_ROOT / "claims.yaml")
    for claim_ in registry.claims:
        values = flat_values(claim_, repeats=20)
        for decide in (None, DECIDE_20):
            result = judging.judge(claim_, values, FAST, decide)
            assert result["verdict_alone"] not in REPRODUCING, (claim_.id, decide, result.get("values"))


def test_the_old_line_of_the_peak_claim_was_vacuous():
    """The drop after the peak is never negative: against the old line 0, the flat input above "reproduced"
    circles.test_peaks_then_falls; against its line of 0.03 (more than one-example flicker can give) it fails."""
    registry = schema.load_registry(REPO_ROOT / "claims.yaml")
    (peak,) = [c for c in registry.claims if c.id == "circles.test_peaks_then_falls"]
    assert peak.test.line == pytest.approx(0.03)
    old = dataclasses.replace(peak, test=dataclasses.replace(peak.test, line=0.0))
    assert judging.judge(old, flat_values(old, 20), FAST)["verdict_alone"] in REPRODUCING
    assert judging.judge(peak, flat_values(peak, 20), FAST)["verdict_alone"] not in REPRODUCING


def test_every_catalogued_claim_fails_on_a_simulated_null_at_most_at_alpha():
    """The same claims on noisy null input: each variant's value is its own noise around the same level (a
    sameness claim: one margin apart). Over 4,000 simulated claims per statistic kind (contrast values drawn
    directly, on each claim's scale), "reproduced" comes out at most at alpha plus Monte Carlo error."""
    registry = schema.load_registry(REPO_ROOT / "claims.yaml")
    rng = np.random.default_rng(31)
    draws = 4000
    bound = scipy_stats.binom.ppf(0.999, draws, 0.025) / draws
    for claim_ in registry.claims:
        test = claim_.test
        noise = rng.standard_normal((draws, 10))
        if test.kind == "equivalent":
            inside = stats.decide_equivalence(noise + 1.0, 1.0, 0.95)
            rate = np.mean(inside.verdict == "reproduced")
        elif test.kind == "level":
            value, tolerance = claim_.published_value, test.tolerance
            rate = np.mean(
                stats.decide_level(value + tolerance + 0.01 * noise, value - tolerance, value + tolerance, 0.95).verdict
                == "reproduced"
            )
        else:
            line = measures.scaled(claim_, test.line)
            outcome = stats.judge_looks(line + noise, line, test.direction, 0.5, (10,), (0.025,))
            rate = np.mean(outcome.direction == 1)
        assert rate <= bound, claim_.id
