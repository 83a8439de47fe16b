"""Params validation: every kind of mistake names the key path, the bad value and what is allowed."""

import copy

import pytest

from regbench import config
from regbench.schema import NAME_PATTERN, ParamsError
from tests.conftest import real_params


def parse_with(change) -> config.Params:
    raw = copy.deepcopy(real_params())
    change(raw)
    return config.parse(raw)


def test_real_params_hold_the_published_settings():
    params = config.parse(real_params())
    imdb = params.experiments["imdb"]
    assert imdb.variants["bigger"].members[0].params.hidden == (512, 512)
    assert imdb.variants["l2"].members[0].params.l2 == 0.001
    assert imdb.defaults.batch_size == 512 and imdb.defaults.epochs == 20
    sonar = params.experiments["sonar"].variants["dropout_maxnorm"].members[0].params
    assert (sonar.optimizer.learning_rate, sonar.optimizer.momentum, sonar.max_norm) == (0.1, 0.9, 3.0)
    grid = params.experiments["circles"].variants["dropout_grid"]
    assert [m.params.hidden_dropout for m in grid.members] == pytest.approx([i / 10 for i in range(9)])
    assert params.experiments["mnist"].defaults.activation == "linear"
    assert params.prepare["circles"].random_state == 1 and params.prepare["synthetic"].random_state == 42
    assert len(params.train.runs) == sum(len(e.variants) for e in params.experiments.values())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["imdb"]["variants"]["bigger"].update(epoch=3), "imdb.variants.bigger.epoch = 3: unknown key"),
        (
            lambda r: r["imdb"]["variants"]["bigger"].update(epochs=-3),
            "imdb.variants.bigger.epochs = -3: must be a positive",
        ),
        (lambda r: r["imdb"]["defaults"].update(epochs="20"), "imdb.defaults.epochs = '20': must be an integer"),
        (
            lambda r: r["sonar"]["variants"]["input_dropout"].update(input_dropout=1.0),
            "sonar.variants.input_dropout.input_dropout = 1.0: must be a dropout rate in [0, 1)",
        ),
        (lambda r: r["sonar"]["variants"]["hidden_dropout"].update(hidden_dropout=-0.1), "hidden_dropout = -0.1"),
        (
            lambda r: r["circles"]["variants"]["dropout_grid"]["grid"].update(hidden_dropout=[0.1, 1.5]),
            "circles.variants.dropout_grid.grid.hidden_dropout[1] = 1.5",
        ),
        (
            lambda r: r["imdb"]["defaults"]["optimizer"].update(name="adagrad"),
            "imdb.defaults.optimizer.name = 'adagrad': must be one of",
        ),
        (lambda r: r["train"].update(engine="turbo"), "train.engine = 'turbo': must be one of ['compiled', 'fit']"),
        (lambda r: r["train"].update(executor="dask"), "train.executor = 'dask': must be one of ['local', 'ray']"),
        (lambda r: r["train"]["ray"].update(max_retries=-1), "train.ray.max_retries = -1: must be 0 or a positive"),
        (lambda r: r["train"]["ray"].update(task_cpus=0), "train.ray.task_cpus = 0: must be a positive number"),
        (lambda r: r["train"]["ray"].update(task_gpu=1), "train.ray.task_gpu = 1: unknown key"),
        (
            lambda r: r["fetch"]["datasets"]["sonar"]["sources"]["uci"].update(digest="abc"),
            "digest = 'abc': must be 64 lowercase hex",
        ),
        (lambda r: r["fetch"].update(retries=-1), "fetch.retries = -1: must be 0 or more"),
        (
            lambda r: r["prepare"]["sonar"].update(standardize="yes"),
            "prepare.sonar.standardize = 'yes': must be true or false",
        ),
        (lambda r: r["imdb"].update(seeds=[1, 1]), "imdb.seeds = [1, 1]: must be a non-empty list of distinct"),
        (lambda r: r.update(imbd={}), "imbd = '...': unknown section"),
        (lambda r: r["train"]["runs"].pop("imdb-l2"), "imdb.variants.l2 = '...': is never trained"),
        (
            lambda r: r["train"]["runs"].update({"imdb-huge": {"experiment": "imdb", "variant": "huge"}}),
            "train.runs.imdb-huge.variant = 'huge'",
        ),
        (lambda r: r["claims"].update(confidence=1.5), "claims.confidence = 1.5: must be in (0.5, 1)"),
        (
            lambda r: r["prepare"]["sonar"].update(input="data/raw/imdb"),
            "prepare.sonar.input = 'data/raw/imdb': must be 'data/raw/sonar'",
        ),
        (lambda r: r["prepare"].update(moons={}), "prepare.moons = '...': names no registered experiment"),
        (lambda r: r["prepare"].pop("imdb"), "prepare.imdb = None: missing"),
        (
            lambda r: r["imdb"]["variants"]["weight_decay"]["optimizer"].update(weight_decay=-0.002),
            "imdb.variants.weight_decay.optimizer.weight_decay = -0.002: must be 0 (off) or a positive decay factor",
        ),
        (
            lambda r: r["imdb"]["variants"]["l1"].update(l1=-1.0),
            "imdb.variants.l1.l1 = -1.0: must be 0 (off) or a positive L1 factor",
        ),
        (
            lambda r: r["sonar"]["variants"]["dropout_tips"]["optimizer"]["decay"].update(kind="cosine"),
            "dropout_tips.optimizer.decay.kind = 'cosine': must be one of ['inverse_time', 'exponential']",
        ),
        (
            lambda r: r["sonar"]["variants"]["dropout_tips"]["optimizer"]["decay"].update(steps=0),
            "optimizer.decay.steps = 0: must be a positive number of optimizer steps",
        ),
        (
            lambda r: r["sonar"]["variants"]["dropout_tips"]["optimizer"]["decay"].update(kind="exponential"),
            "rate = 9.0 every 3600 steps, so it must lie in (0, 1) to decay",
        ),
        (
            lambda r: r["sonar"]["variants"]["dropout_tips"]["optimizer"]["decay"].update(period=3),
            "optimizer.decay.period = 3: unknown key; allowed keys here: ['kind', 'rate', 'steps']",
        ),
    ],
)
def test_bad_values_name_the_key_path(change, expected):
    with pytest.raises(ParamsError) as error:
        parse_with(change)
    assert expected in str(error.value)


def test_new_settings_reach_the_variants_and_the_manifest():
    from regbench.schema import flatten, to_plain

    params = config.parse(real_params())
    tips = params.experiments["sonar"].variants["dropout_tips"].members[0].params
    assert tips.optimizer.decay == config.DecayParams("inverse_time", 9.0, 3600)
    assert tips.max_norm == 4.0 and tips.hidden_dropout == 0.2 and tips.optimizer.momentum == 0.9
    imdb = params.experiments["imdb"].variants
    assert imdb["weight_decay"].members[0].params.optimizer.weight_decay == 0.002
    assert imdb["weight_decay"].members[0].params.optimizer.name == "rmsprop"
    assert imdb["l1_l2"].members[0].params.l1 == imdb["l1_l2"].members[0].params.l2 == 0.001
    # What the manifest and MLflow record of a variant (train.py, schedule.py): every setting, flattened.
    flat = flatten(to_plain(tips))
    assert flat["optimizer.decay.kind"] == "inverse_time" and flat["optimizer.weight_decay"] == 0.0
    assert flatten(to_plain(imdb["l1"].members[0].params))["l1"] == 0.001


def test_missing_required_key_is_reported():
    with pytest.raises(ParamsError, match=r"imdb.defaults.loss = None: missing"):
        parse_with(lambda r: r["imdb"]["defaults"].pop("loss"))


def test_params_are_frozen():
    params = config.parse(real_params())
    with pytest.raises(AttributeError):
        params.train.engine = "fit"
    with pytest.raises(TypeError):
        params.train.runs["x"] = None


def test_load_reports_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        config.load(path)


def _rename_variant(raw: dict, experiment: str, old: str, new: str) -> None:
    raw[experiment]["variants"][new] = raw[experiment]["variants"].pop(old)
    raw["train"]["runs"].pop(f"{experiment}-{old}")
    raw["train"]["runs"][f"{experiment}-{new}"] = {"experiment": experiment, "variant": new}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda r: _rename_variant(r, "circles", "overfit", "../../../../../victim"),
            "circles.variants.../../../../../victim = '../../../../../victim': must be a name of lowercase letters",
        ),
        (lambda r: _rename_variant(r, "sonar", "baseline", "Base-line"), "'Base-line': must be a name of"),
        (lambda r: _rename_variant(r, "imdb", "l2", "l2 "), "'l2 ': must be a name of"),
        (
            lambda r: r["imdb"]["defaults"]["optimizer"].update(learning_rate=float("inf")),
            "imdb.defaults.optimizer.learning_rate = inf: must be a positive number",
        ),
        (
            lambda r: r["sonar"]["variants"]["baseline"].update(optimizer={"learning_rate": float("nan")}),
            "sonar.variants.baseline.optimizer.learning_rate = nan: must be a positive number",
        ),
        (lambda r: r["imdb"].update(seeds=[0, 2**32]), f"imdb.seeds[1] = {2**32}: must be in [0, 2**32)"),
        (lambda r: r["imdb"].update(seeds=[-1]), "imdb.seeds[0] = -1: must be in [0, 2**32)"),
        (
            lambda r: r["circles"]["variants"]["overfit"].update(seeds=[3, 2**40]),
            f"circles.variants.overfit.seeds[1] = {2**40}: must be in [0, 2**32)",
        ),
        (
            lambda r: r["circles"]["variants"]["dropout_grid"]["grid"].update(hidden_dropout=[0.1, 0.2, 0.10]),
            "circles.variants.dropout_grid.grid.hidden_dropout[2] = 0.1: repeats an earlier value",
        ),
        (lambda r: r["fetch"].update(timeout_s=float("inf")), "fetch.timeout_s = inf: must be a positive number"),
    ],
)
def test_names_seeds_rates_and_grids_that_would_misbehave_are_refused_naming_the_key(change, expected):
    with pytest.raises(ParamsError) as error:
        parse_with(change)
    assert expected in str(error.value)


def test_the_largest_32_bit_seed_is_accepted():
    params = parse_with(lambda r: r["imdb"].update(seeds=[0, 2**32 - 1]))
    assert params.experiments["imdb"].seeds == (0, 2**32 - 1)


def test_every_name_in_the_real_params_and_claims_follows_the_pattern():
    from regbench.claims.schema import load_registry
    from tests.conftest import REPO_ROOT

    params = config.parse(real_params())
    names = [name for experiment in params.experiments.values() for name in (experiment.name, *experiment.variants)]
    assert names and all(NAME_PATTERN.fullmatch(name) for name in names)
    assert load_registry(REPO_ROOT / "claims.yaml").claims  # every id passed check_claim_id


@pytest.mark.parametrize("bad_id", ["sonar", "sonar.a.b", "sonar./x", "../sonar.x", "Sonar.x", "sonar.<script>"])
def test_a_claim_id_that_is_not_experiment_dot_name_is_refused(tmp_path, bad_id):
    import yaml

    from regbench.claims.schema import load_registry
    from tests.conftest import REPO_ROOT

    raw = yaml.safe_load((REPO_ROOT / "claims.yaml").read_text())
    raw["claims"][3]["id"] = bad_id
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ParamsError) as error:
        load_registry(path)
    assert f"claims.yaml: claims[3].id = {bad_id!r}: must be <experiment>.<name>" in str(error.value)
