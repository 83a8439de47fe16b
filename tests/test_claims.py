"""Claims: the measure vocabulary on hand-made histories, verdict logic on constructed data, the registry."""

import dataclasses

import numpy as np
import pytest
import yaml

from regbench import claims, config
from regbench.schema import ParamsError
from tests.conftest import REPO_ROOT, real_params

SETTINGS = config.ClaimsParams(confidence=0.95, bootstrap_resamples=2000, bootstrap_seed=0, min_repeats=3)


def run_with(repeat=0, fold=None, status="ok", finals=None, **curves) -> claims.Run:
    series = {m: np.asarray(curves.get(m, [0.0, 0.0, 0.0]), float) for m in claims.EPOCH_METRICS}
    return claims.Run("v", repeat, fold, status, series, finals or {})


def measure(kind, run, metric="val_loss", **extra):
    return claims.measure(run, claims.Measure(kind=kind, metric=metric, **extra))


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
    gap = claims.Measure(kind="gap", metric="train_eval_accuracy", minus="val_accuracy")
    assert claims.measure(run, gap) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="test_accuracy"):
        measure("final", run, metric="test_accuracy")


def test_per_repeat_averages_folds_and_drops_a_repeat_with_a_diverged_run():
    runs = [
        run_with(0, 0, val_accuracy=[0.5, 0.8]),
        run_with(0, 1, val_accuracy=[0.5, 0.6]),
        run_with(1, 0, val_accuracy=[0.5, 0.9]),
        run_with(1, 1, status="diverged", val_accuracy=[0.5]),
    ]
    values = claims.per_repeat(runs, claims.Measure(kind="final", metric="val_accuracy"))
    assert values == {0: pytest.approx(0.7)}


def claim(kind="paired", direction="greater", line=0.0, tolerance=None, published_value=None, measure="final"):
    test = claims.Test(
        kind=kind,
        variant="a",
        versus="b" if kind == "paired" else None,
        direction=None if kind == "level" else direction,
        line=line,
        tolerance=tolerance,
    )
    metric = "loss" if measure == "curve" else "val_accuracy"
    return claims.Claim(
        "x.claim",
        "sonar",
        "s.txt",
        "statement",
        "pub",
        claims.Measure(kind=measure, metric=metric),
        test,
        published_value,
    )


def values(*numbers):
    return dict(enumerate(numbers))


def test_a_clear_effect_the_claimed_way_is_reproduced_and_the_opposite_refuted():
    better = {"a": values(0.86, 0.88, 0.85, 0.87, 0.89), "b": values(0.80, 0.81, 0.79, 0.82, 0.80)}
    result = claims.judge(claim(direction="greater"), better, SETTINGS)
    assert result["verdict"] == "reproduced" and result["ci_low"] > 0 and result["repeats"] == 5
    assert result["mean"] == pytest.approx(0.066)
    assert claims.judge(claim(direction="less"), better, SETTINGS)["verdict"] == "refuted"


def test_overlapping_distributions_are_inconclusive():
    noisy = {"a": values(0.86, 0.78, 0.85, 0.79, 0.84), "b": values(0.80, 0.83, 0.81, 0.84, 0.80)}
    result = claims.judge(claim(direction="greater"), noisy, SETTINGS)
    assert result["ci_low"] < 0 < result["ci_high"] and result["verdict"] == "inconclusive"


def test_too_few_repeats_is_inconclusive_whatever_the_interval():
    two = {"a": values(0.9, 0.91), "b": values(0.5, 0.52)}
    result = claims.judge(claim(), two, SETTINGS)
    assert result["verdict"] == "inconclusive" and "only 2 repeats" in result["reason"]


def test_level_claim_inside_and_outside_the_band():
    near = {"a": values(0.84, 0.85, 0.86, 0.85, 0.845)}
    inside = claims.judge(claim("level", tolerance=0.025, published_value=0.85), near, SETTINGS)
    assert inside["verdict"] == "reproduced" and inside["published_in_interval"]
    assert inside["distance_to_published"] == pytest.approx(-0.001)
    far = {"a": values(0.70, 0.71, 0.69, 0.70, 0.72)}
    outside = claims.judge(claim("level", tolerance=0.025, published_value=0.85), far, SETTINGS)
    assert outside["verdict"] == "refuted" and not outside["published_in_interval"]
    wide = {"a": values(0.80, 0.87, 0.76, 0.90, 0.83)}
    assert claims.judge(claim("level", tolerance=0.025, published_value=0.85), wide, SETTINGS)["verdict"] == (
        "inconclusive"
    )


def test_a_curve_claim_must_hold_at_every_epoch():
    above = {
        "a": {r: np.array([1.0, 0.8, 0.6]) + 0.1 for r in range(4)},
        "b": {r: np.array([1.0, 0.8, 0.6]) for r in range(4)},
    }
    assert claims.judge(claim(measure="curve"), above, SETTINGS)["verdict"] == "reproduced"
    crossing = {"a": {r: np.array([0.9, 0.9, 0.7]) for r in range(4)}, "b": above["b"]}
    assert claims.judge(claim(measure="curve"), crossing, SETTINGS)["verdict"] == "refuted"


def test_holm_adjusts_step_down_and_stays_monotone():
    adjusted = claims.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


def test_bootstrap_is_seeded_per_claim():
    sample = np.array([0.1, 0.3, 0.2, 0.5])
    first = claims.bootstrap_means(sample, 500, 0, "a.claim")
    np.testing.assert_array_equal(first, claims.bootstrap_means(sample, 500, 0, "a.claim"))
    assert not np.array_equal(first, claims.bootstrap_means(sample, 500, 0, "b.claim"))


def test_the_registry_declares_every_catalogued_claim():
    registry = claims.load_registry(REPO_ROOT / "claims.yaml")
    catalogue = (
        (REPO_ROOT.parent / "shared" / "experiments.md").read_text() if (REPO_ROOT.parent / "shared").exists() else ""
    )
    ids = [c.id for c in registry.claims]
    assert ids and len(set(ids)) == len(ids)
    for claim_id in ids:
        if catalogue:
            assert f"| {claim_id} |" in catalogue
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
        claims.load_registry(path)
    raw = yaml.safe_load((REPO_ROOT / "claims.yaml").read_text())
    raw["claims"][1]["measure"] = {"kind": "best_epoch", "metric": "test_accuracy"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="needs a per-epoch metric"):
        claims.load_registry(path)


def test_claims_of_unconfigured_variants_are_reported_as_not_run(tmp_path):
    raw = real_params()
    del raw["circles"]
    raw["train"]["runs"] = {k: v for k, v in raw["train"]["runs"].items() if not k.startswith("circles")}
    params = config.parse(raw)
    evaluation = claims.evaluate(claims.load_registry(REPO_ROOT / "claims.yaml"), params, tmp_path)
    assert evaluation["claims"]["circles.overfit_gap"]["verdict"] == claims.NOT_RUN
    assert "not in params.yaml" in evaluation["claims"]["circles.overfit_gap"]["reason"]
    assert evaluation["summary"]["tested"] == 0
    view = claims.metrics_view(evaluation)
    assert view["claims"]["imdb.bigger_noisier"] == {"verdict": claims.NOT_RUN, "verdict_code": None}
    assert dataclasses.is_dataclass(claims.load_registry(REPO_ROOT / "claims.yaml"))
