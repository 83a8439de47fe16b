"""What a repeat's seed varies (issue 27): sonar's CV split per repeat, and the optional data scope.

Sonar's published code draws a new stratified split on every run, so each repeat draws its folds from its
own seed, the same folds in every variant. Under ``<experiment>.randomness.scope: data`` the generated
datasets are drawn anew per repeat seed. A run stays a function of its identity, which holds the scope.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from regbench import config
from regbench.claims import scopes
from regbench.data import datasets
from regbench.data.experiments import Raw, registry
from regbench.data.experiments.sonar import fold_assignment
from regbench.schema import ParamsError
from regbench.train import plan, variant
from stages import claims as claims_stage
from stages import prepare as prepare_stage
from stages import report as report_stage
from stages import train as train_stage
from tests.conftest import REPO_ROOT, copy_repo, dvc, real_params, shrunk_params, sonar_bytes, write_params

SEEDS = (0, 1, 2, 3)


def params_with(**scopes: str) -> config.Params:
    raw = copy.deepcopy(real_params())
    for name, scope in scopes.items():
        raw[name]["randomness"] = {"scope": scope}
    return config.parse(raw)


def prepared(name: str, tmp_path: Path, scope: str = "setup", raw_bytes: bytes | None = None):
    """The experiment's prepared data as the prepare stage writes it, loaded as the train stage does."""
    experiment = registry()[name]
    section = config.parse(real_params()).prepare[name]
    raw = None
    if raw_bytes is not None:
        (tmp_path / "raw").write_bytes(raw_bytes)
        raw = Raw(file=tmp_path / "raw", source={"source": "fixture"})
    arrays, info = experiment.prepare(section, raw)
    manifest = {"experiment": name, "source": {"source": "fixture"}, "params": dataclasses.asdict(section), **info}
    datasets.save(tmp_path / name, arrays, manifest)
    return datasets.load(tmp_path / name, randomness=scope)


def jobs_by_seed_and_fold(params: config.Params, experiment: str, variant_name: str, data) -> dict:
    """The runs (with their rows) the train stage plans for one variant, by (seed, fold)."""
    members = list(params.experiments[experiment].variants[variant_name].members)
    folds = plan.cv_folds(params.experiments[experiment], data)
    return {(run.seed, run.fold): run for run in plan.plan_runs(params, SEEDS, members, data, folds)}


# --- sonar: the split is drawn by every repeat ------------------------------------------------------


@pytest.fixture(scope="module")
def sonar(tmp_path_factory):
    # As many rows as the real file, in its format (M and R alternate: 104 each).
    return prepared("sonar", tmp_path_factory.mktemp("sonar"), raw_bytes=sonar_bytes(rows=208))


def test_sonar_prepares_no_split_and_each_repeat_draws_its_own(sonar):
    assert "fold" not in sonar
    assignments = [datasets.for_repeat(sonar, seed)["fold"] for seed in SEEDS]
    for index, first in enumerate(assignments):
        for second in assignments[index + 1 :]:
            assert not np.array_equal(first, second)
    # A function of the seed alone: drawn again, the same folds.
    assert np.array_equal(datasets.for_repeat(sonar, SEEDS[0])["fold"], assignments[0])


def test_sonar_folds_are_stratified_and_cover_every_row_once(sonar):
    labels = sonar["y_train"].astype(int)
    for seed in SEEDS:
        folds = datasets.for_repeat(sonar, seed)["fold"]
        assert sorted(set(folds.tolist())) == list(range(10))
        for label in (0, 1):
            # Stratified: each fold holds floor or ceil of a tenth of each class.
            per_fold = np.bincount(folds[labels == label], minlength=10)
            share = (labels == label).sum() / 10
            assert per_fold.min() >= np.floor(share) and per_fold.max() <= np.ceil(share), per_fold


def test_sonar_fold_assignment_is_stratified_on_an_unbalanced_label():
    labels = np.array([1] * 111 + [0] * 97, dtype=np.float32)  # the real file's 111 M and 97 R rows
    folds = fold_assignment(labels, 10, seed=3)
    for label, total in ((1, 111), (0, 97)):
        per_fold = np.bincount(folds[labels == label], minlength=10)
        assert per_fold.sum() == total and per_fold.max() - per_fold.min() <= 1


def test_the_same_repeat_gets_the_same_folds_in_every_variant(sonar):
    params = config.parse(real_params())
    baseline = jobs_by_seed_and_fold(params, "sonar", "baseline", sonar)
    for other in ("input_dropout", "bigger", "dropout_tips"):
        jobs = jobs_by_seed_and_fold(params, "sonar", other, sonar)
        assert jobs.keys() == baseline.keys()
        for key, job in jobs.items():
            # The same held-out rows and the same training rows, in the same order: the pairing is kept.
            np.testing.assert_array_equal(job.data.x_val, baseline[key].data.x_val)
            np.testing.assert_array_equal(job.data.y_train, baseline[key].data.y_train)
            np.testing.assert_array_equal(job.data.x_train, baseline[key].data.x_train)
    # Two repeats of one variant hold out different rows in the same fold.
    assert not np.array_equal(baseline[(0, 0)].data.x_val, baseline[(1, 0)].data.x_val)


# --- scope data: each repeat its own dataset -----------------------------------------------------


def digest_of(job) -> str:
    parts = [job.data.x_train, job.data.y_train, job.data.x_val, job.data.y_val]
    return hashlib.sha256(b"".join(np.ascontiguousarray(p).tobytes() for p in parts)).hexdigest()


def test_circles_scope_data_draws_a_dataset_per_seed_the_same_in_every_variant(tmp_path):
    published = prepared("circles", tmp_path)
    drawn = datasets.load(tmp_path / "circles", randomness="data")
    params = params_with(circles="data")
    by_variant = {v: jobs_by_seed_and_fold(params, "circles", v, drawn) for v in ("overfit", "dropout", "maxnorm")}
    digests = {v: {seed: digest_of(jobs[(seed, None)]) for seed in SEEDS} for v, jobs in by_variant.items()}
    # Different seeds, different datasets; the same seed, the same dataset in every variant.
    assert len(set(digests["overfit"].values())) == len(SEEDS)
    assert digests["dropout"] == digests["overfit"] == digests["maxnorm"]
    # The generator's settings are the published ones: 30 training and 70 test points, two classes.
    job = by_variant["overfit"][(SEEDS[0], None)]
    assert job.data.x_train.shape == (30, 2) and job.data.x_val.shape == (70, 2)
    assert set(np.unique(job.data.y_val)) == {0.0, 1.0}
    # Scope setup: every repeat trains on the published draw.
    setup = jobs_by_seed_and_fold(config.parse(real_params()), "circles", "overfit", published)
    for seed in SEEDS:
        np.testing.assert_array_equal(setup[(seed, None)].data.x_train, published["x_train"])
    assert digest_of(setup[(0, None)]) not in digests["overfit"].values()


def test_synthetic_and_mnist_scope_data_redraw_what_the_tutorial_fixed(tmp_path):
    synthetic = prepared("synthetic", tmp_path, scope="data")
    first, second = (datasets.for_repeat(synthetic, seed) for seed in (0, 1))
    assert first["x_train"].shape == (800, 20) and first["x_test"].shape == (200, 20)
    assert not np.array_equal(first["x_train"], second["x_train"])
    np.testing.assert_array_equal(datasets.for_repeat(synthetic, 0)["x_train"], first["x_train"])

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (100, 4)).astype(np.float32)
    labels = np.arange(100) % 10
    one_hot = np.eye(10, dtype=np.float32)[labels]
    arrays = {"x_train": x[:80], "y_train": one_hot[:80], "x_test": x[80:], "y_test": one_hot[80:]}
    mnist = datasets.PreparedData(arrays, {"experiment": "mnist"}, randomness="data")
    splits = [datasets.for_repeat(mnist, seed) for seed in (0, 1)]
    for split in splits:
        assert split["x_train"].shape == (80, 4) and split["x_test"].shape == (20, 4)
        # Stratified by digit: two test images of each of the ten digits.
        assert np.array_equal(split["y_test"].sum(axis=0), np.full(10, 2.0))
        # Every image once, in train or test.
        pooled = np.concatenate([split["x_train"], split["x_test"]])
        assert sorted(map(bytes, pooled)) == sorted(map(bytes, x))
    assert not np.array_equal(splits[0]["x_test"], splits[1]["x_test"])
    setup = datasets.for_repeat(dataclasses.replace(mnist, randomness="setup"), 0)
    np.testing.assert_array_equal(setup["x_test"], x[80:])


def test_a_scope_the_data_cannot_have_is_refused_with_the_reason():
    for name, why in (("imdb", "25,000/25,000"), ("sonar", "208 measured rows")):
        with pytest.raises(ParamsError, match=f"{name}.randomness.scope") as error:
            params_with(**{name: "data"})
        assert why in str(error.value)
    raw = copy.deepcopy(real_params())
    raw["circles"]["randomness"] = {"scope": "everything"}
    with pytest.raises(ParamsError, match="circles.randomness.scope"):
        config.parse(raw)
    del raw["circles"]["randomness"]
    with pytest.raises(ParamsError, match="circles.randomness"):
        config.parse(raw)


def test_every_experiment_says_what_each_scope_varies():
    for experiment in registry().values():
        assert set(experiment.varies["setup"]) >= {"weights"}
        assert set(experiment.keeps) == set(experiment.varies), experiment.name
    assert "split" in registry()["sonar"].varies["setup"]
    assert "data draw" in registry()["circles"].varies["data"]
    assert "data" not in registry()["imdb"].varies


def test_the_scope_is_part_of_a_runs_identity(sonar, tmp_path):
    circles = prepared("circles", tmp_path)
    keys = {}
    for scope in ("setup", "data"):
        params = params_with(circles=scope)
        runs = plan.plan_runs(
            params, (0,), list(params.experiments["circles"].variants["overfit"].members), circles, [None]
        )
        identity = variant._identities(params, "circles", runs, "digest")[0]
        assert identity["randomness"] == scope
        keys[scope] = variant.runstore.key(identity)
    assert keys["setup"] != keys["data"]


def test_a_rerun_under_scope_data_is_byte_identical_and_differs_from_setup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepared("circles", tmp_path / "data/prepared")
    outputs = {}
    for name, scope in (("first", "data"), ("again", "data"), ("setup", "setup")):
        raw = copy.deepcopy(real_params())
        raw["circles"]["randomness"] = {"scope": scope}
        raw["circles"]["seeds"] = [0, 1]
        raw["circles"]["variants"]["dropout"].pop("seeds", None)
        raw["train"]["max_epochs"] = 3
        params = config.parse(raw)
        out = tmp_path / name
        variant.train(params, "circles-dropout", out)
        outputs[name] = (out / "histories.csv").read_bytes()
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["randomness"]["scope"] == scope
        assert manifest["randomness"]["varies"] == list(registry()["circles"].varies[scope])
    assert outputs["first"] == outputs["again"]
    assert outputs["first"] != outputs["setup"]


# --- DVC: changing one experiment's scope reruns only its train stages ---------------------------


@pytest.mark.pipeline
def test_changing_a_scope_reruns_only_that_experiments_train_stages(tmp_path, mirror):
    repo = copy_repo(tmp_path)
    write_params(repo, shrunk_params(mirror, {"circles": ["overfit"], "synthetic": ["baseline"]}, epochs=2))
    targets = ["train@circles-overfit", "train@synthetic-baseline"]
    dvc(repo, "repro", *targets)
    assert "Data and pipelines are up to date" in dvc(repo, "status", *targets).stdout

    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["circles"]["randomness"]["scope"] = "data"
    write_params(repo, raw)
    stages = [*targets, "prepare@circles", "prepare@synthetic"]
    changed = json.loads(dvc(repo, "status", "--json", *stages).stdout)
    assert set(changed) == {"train@circles-overfit"}, changed
    assert changed["train@circles-overfit"] == [{"changed deps": {"params.yaml": {"circles.randomness": "modified"}}}]


# --- both scopes side by side: claims.scope_reference -------------------------------------------------


def judged(verdict: str, scope: str | None, mean: float = 0.1) -> dict:
    randomness = {"scope": scope, "covers": f"covers under {scope}"} if scope else None
    entry = {"values": [mean], "verdict": verdict, "mean": mean, "ci_low": 0.0, "ci_high": 0.2, "repeats": 5}
    return {**entry, "randomness": randomness} if randomness else entry


def test_only_claims_judged_under_another_scope_are_put_side_by_side():
    here = {"a": judged("reproduced", "data"), "b": judged("undecided", "setup"), "c": judged("reproduced", "data")}
    there = {"a": judged("undecided", "setup"), "b": judged("undecided", "setup"), "d": judged("reproduced", "setup")}
    compared = scopes.compare(here, there, "DVC experiment setup-run")
    assert list(compared["claims"]) == ["a"]  # b: the same scope; c: not judged there; d: not judged here
    a = compared["claims"]["a"]
    assert (a["here"]["scope"], a["other"]["scope"], a["same_verdict"]) == ("data", "setup", False)
    assert a["other"]["covers"] == "covers under setup" and a["other"]["mean"] == 0.1
    assert compared["summary"] == (
        "Claims judged under a second randomness scope (DVC experiment setup-run): 1; "
        "with the same verdict under both: 0."
    )
    assert scopes.compare(here, None, "no reference")["claims"] == {}
    old = {"a": judged("undecided", None)}  # a claims file from before scopes were recorded
    assert "records no randomness scope" in scopes.compare(here, old, "HEAD~5")["summary"]


def test_the_report_says_what_each_scope_varied_and_shows_both_verdicts_side_by_side(tmp_path, mirror, monkeypatch):
    """Real training, claims and report: circles under setup, then under data with the setup run as reference."""
    raw = shrunk_params(mirror, {"circles": ["overfit", "dropout"]}, epochs=20, seeds=(0, 1, 2))
    raw["claims"]["drift_reference"] = None
    write_params(tmp_path, raw)
    (tmp_path / "claims.yaml").write_bytes((REPO_ROOT / "claims.yaml").read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    prepare_stage.main(["circles"])

    def train_judge_and_report() -> tuple[dict, str]:
        for variant_name in ("overfit", "dropout"):
            train_stage.main([f"circles-{variant_name}"])
        claims_stage.main([])
        report_stage.main([])
        detail = json.loads((tmp_path / "reports/claims_detail.json").read_text())
        return detail, (tmp_path / "reports/report.md").read_text()

    setup_detail, setup_report = train_judge_and_report()
    tested = {claim_id for claim_id, entry in setup_detail["claims"].items() if "values" in entry}
    assert tested and all(setup_detail["claims"][c]["randomness"]["scope"] == "setup" for c in tested)
    assert "**Randomness:** scope `setup`: a verdict below holds for the published dataset." in setup_report
    assert "`dvc exp run -S circles.randomness.scope=data`" in setup_report
    assert "so a verdict holds for the tutorial's published dataset" in setup_report
    assert "Randomness scopes side by side" not in setup_report and setup_detail["scopes"]["claims"] == {}
    (tmp_path / "setup_claims.json").write_text(json.dumps(setup_detail))

    raw["circles"]["randomness"] = {"scope": "data"}
    raw["claims"]["scope_reference"] = "setup_claims.json"
    write_params(tmp_path, raw)
    detail, report = train_judge_and_report()
    compared = detail["scopes"]["claims"]
    assert set(compared) == tested
    for claim_id in tested:
        assert compared[claim_id]["here"]["scope"] == "data" and compared[claim_id]["other"]["scope"] == "setup"
        assert compared[claim_id]["other"]["verdict"] == setup_detail["claims"][claim_id]["verdict"]
    assert "**Randomness:** scope `data`: a verdict below holds for the data-generating process." in report
    assert "## Randomness scopes side by side" in report
    assert report.count("- Under another randomness scope: ") == len(tested)
    assert report.count("(scope `setup`, about the published dataset)") == 2 * len(tested)
    assert "Under scope `setup` a repeat varies only weights, order, masks" in report
    assert "Under the wider scope of circles a repeat also redraws what the tutorial fixed" in report
