"""A run's identity (regbench/train/identity.py): what changes its numbers changes its key, nothing else does."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest

from regbench.train import identity, runstore

ROOT = Path(__file__).resolve().parents[1]
CPUINFO = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f hypervisor\n"


def key_of_setup(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    shared = {"trained_under": identity.setup("sonar", cpuinfo)}
    return runstore.key(runstore.identity("circles", {"epochs": 2}, None, 0, None, shared))


@pytest.fixture
def clean_environment(monkeypatch):
    for name in identity.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(identity.RETRAIN_VARIABLE, raising=False)
    return monkeypatch


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """The declared code and the presentation code, copied: edits to the copy leave the worktree alone."""
    for path in (*identity.computes("sonar"), *identity.RECORDS):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, tmp_path / path)
    return tmp_path


@pytest.mark.parametrize("path", identity.computes("sonar"))
def test_editing_code_that_computes_the_numbers_changes_the_code_digest(project_copy, path):
    before = identity.code_digest("sonar", root=project_copy)
    with (project_copy / path).open("a") as file:
        file.write("\n# a comment\n")
    assert identity.code_digest("sonar", root=project_copy) != before


@pytest.mark.parametrize("path", identity.RECORDS)
def test_editing_code_that_writes_or_presents_them_keeps_the_code_digest(project_copy, path):
    before = identity.code_digest("sonar", root=project_copy)
    with (project_copy / path).open("a") as file:
        file.write("\n# a comment\n")
    assert identity.code_digest("sonar", root=project_copy) == before


def test_an_experiments_own_module_is_in_its_digest_only(project_copy):
    """Editing sonar's module retrains sonar's runs, not circles' (each train stage depends on its own)."""
    (project_copy / "regbench/data/experiments/circles.py").parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "regbench/data/experiments/circles.py", project_copy / "regbench/data/experiments/circles.py")
    before = {name: identity.code_digest(name, root=project_copy) for name in ("sonar", "circles")}
    with (project_copy / "regbench/data/experiments/sonar.py").open("a") as file:
        file.write("\n# a comment\n")
    after = {name: identity.code_digest(name, root=project_copy) for name in ("sonar", "circles")}
    assert after["sonar"] != before["sonar"] and after["circles"] == before["circles"]


@pytest.mark.parametrize("name", identity.ENVIRONMENT)
def test_each_numeric_environment_variable_changes_the_key(clean_environment, name):
    before = key_of_setup()
    clean_environment.setenv(name, "0")
    assert key_of_setup() != before


def test_unset_and_set_are_different_identities_and_cosmetic_variables_are_none(clean_environment):
    before = key_of_setup()
    for cosmetic in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "REGBENCH_MIRROR", "DVC_EXP_NAME"):
        clean_environment.setenv(cosmetic, "3")
    assert key_of_setup() == before
    clean_environment.setenv("TF_ENABLE_ONEDNN_OPTS", "1")  # the x86 default, but said explicitly
    assert key_of_setup() != before


@pytest.mark.parametrize("library", [name for name in identity.LIBRARIES if name != "python"])
def test_each_framework_version_changes_the_key(monkeypatch, library):
    before = key_of_setup()
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.0" if name == library else real(name))
    assert key_of_setup() != before


def test_the_python_version_changes_the_key(monkeypatch):
    before = key_of_setup()
    monkeypatch.setattr(identity.platform, "python_version", lambda: "3.0.0")
    assert key_of_setup() != before


def test_cpu_model_and_kernel_isa_flags_change_the_key_other_flags_do_not(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"

    def key_with(text: str) -> str:
        cpuinfo.write_text(text)
        return key_of_setup(cpuinfo)

    base = key_with(CPUINFO)
    assert identity.cpu(cpuinfo)["model"] == "Test CPU 9000"
    assert identity.cpu(cpuinfo)["isa"] == ["sse4_2", "avx", "avx2", "fma", "avx512f"]
    assert key_with(CPUINFO.replace("Test CPU 9000", "Test CPU 9001")) != base
    for flag in ("avx512f", "avx2", "fma"):
        assert key_with(CPUINFO.replace(f" {flag}", "")) != base
    assert key_with(CPUINFO.replace(" avx512f", " avx512f amx_tile")) != base
    # Flags no kernel choice reads (a hypervisor bit, a power feature) are not part of it.
    assert key_with(CPUINFO.replace(" hypervisor", "")) == base
    assert key_with(CPUINFO.replace(" fpu", " fpu monitor")) == base


def test_retrain_switch_reads_one_variable_and_rejects_unknown_values(clean_environment):
    assert identity.retrain_requested() is False
    for value, wanted in (("1", True), ("true", True), ("0", False), ("no", False)):
        clean_environment.setenv(identity.RETRAIN_VARIABLE, value)
        assert identity.retrain_requested() is wanted
    clean_environment.setenv(identity.RETRAIN_VARIABLE, "always")
    with pytest.raises(ValueError, match="REGBENCH_RETRAIN='always'"):
        identity.retrain_requested()


def test_the_manifest_lists_what_the_stored_runs_were_trained_under(clean_environment):
    trained_off = {"trained_under": {"environment": {"TF_ENABLE_ONEDNN_OPTS": "0"}}}
    trained_default = {"trained_under": {"environment": {"TF_ENABLE_ONEDNN_OPTS": None}}}
    entries = [{"identity": {**trained_off, "seed": 0}}, {"identity": {**trained_off, "seed": 1}}]
    assert runstore.trained_under(entries) == [trained_off["trained_under"]]
    both = runstore.trained_under([*entries, {"identity": trained_default}])
    assert {setup["environment"]["TF_ENABLE_ONEDNN_OPTS"] for setup in both} == {"0", None}


def test_the_keeper_keeps_each_run_as_it_finishes_and_a_store_it_cannot_write_only_warns(tmp_path, caplog, monkeypatch):
    from types import SimpleNamespace

    from regbench.train.run import History

    identities = [runstore.identity("circles", {"epochs": 2}, None, seed, None, {}) for seed in (0, 1)]
    keys = [runstore.key(each) for each in identities]
    history = History(metrics={"loss": [0.5, 0.25]})
    keeper = runstore.Keeper(tmp_path, identities, keys)
    keeper.on_run_finished(1, SimpleNamespace(history=history, evaluations={"test_accuracy": 0.75}))
    stored = runstore.load(tmp_path, keys)
    assert list(stored) == [keys[1]] and stored[keys[1]]["evaluations"] == {"test_accuracy": 0.75}
    assert runstore.history_of(stored[keys[1]]).metrics == {"loss": [0.5, 0.25]}
    with caplog.at_level("INFO", logger="regbench.train.runstore"):
        keeper.say_kept()
    assert f"1 finished runs kept in {tmp_path / runstore.DIRECTORY}" in caplog.text

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / runstore.DIRECTORY).write_text("a file where the run store's folder goes")
    keeper = runstore.Keeper(blocked, identities, keys)
    for index in (0, 1):  # training goes on; one warning
        keeper.on_run_finished(index, SimpleNamespace(history=history, evaluations={}))
    assert keeper.kept == 0 and caplog.text.count("finished runs cannot be kept") == 1
    assert list(keeper.entries) == keys  # still there for the stage's own outputs
    monkeypatch.chdir(tmp_path / "blocked")
    retraining = runstore.Keeper(None, identities, keys)  # REGBENCH_RETRAIN=1: no run store to keep runs in
    retraining.on_run_finished(0, SimpleNamespace(history=history, evaluations={}))
    assert retraining.kept == 0 and [path.name for path in Path.cwd().iterdir()] == [runstore.DIRECTORY]
    assert list(retraining.entries) == [keys[0]]
