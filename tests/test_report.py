"""The report renders from real (tiny) train results: Markdown, one self-contained HTML page, figures."""

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import yaml

from regbench.claims import judge as claims
from regbench.train import provenance
from stages import claims as claims_stage
from stages import prepare as prepare_stage
from stages import report as report_stage
from stages import train as train_stage
from tests.conftest import REPO_ROOT, shrunk_params
from tools.browser import chromium, dump_dom

CIRCLES = ["overfit", "dropout", "dropout_grid"]


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, mirror):
    """A working copy with circles prepared and trained (3 repeats x 6 epochs) through the stages' main()."""
    directory = tmp_path_factory.mktemp("work")
    raw = shrunk_params(mirror, {"circles": CIRCLES}, epochs=6, seeds=(0, 1, 2))
    # The members the grid-member claims compare (rate 0.1 vs 0.0, 0.8 vs 0.4), and no more: a quick grid.
    raw["circles"]["variants"]["dropout_grid"]["grid"]["hidden_dropout"] = [0.0, 0.1, 0.4, 0.8]
    (directory / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copy(REPO_ROOT / "claims.yaml", directory / "claims.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{directory / 'mlflow.db'}")
        prepare_stage.main(["circles"])
        for variant in CIRCLES:
            train_stage.main([f"circles-{variant}"])
        claims_stage.main([])
        report_stage.main([])
    return directory


def test_claims_json_is_small_and_holds_every_verdict(workdir):
    metrics = json.loads((workdir / "reports/claims.json").read_text())
    declared = claims.load_registry(workdir / "claims.yaml").claims
    circles = {k: v for k, v in metrics["claims"].items() if k.startswith("circles.")}
    assert len(circles) == sum(claim.experiment == "circles" for claim in declared)
    assert all(
        v["verdict"] in ("reproduced", "refuted", "inconclusive") and v["repeats"] == 3 for v in circles.values()
    )
    assert metrics["claims"]["imdb.bigger_noisier"]["verdict"] == "not run"
    assert metrics["summary"]["tested"] == len(circles) and metrics["summary"]["claims"] == len(declared)
    # The new statistics travel with every verdict, so `dvc metrics diff` shows them too.
    for claim_id, row in circles.items():
        if claim_id == "circles.rate_too_low_no_effect":  # a sameness claim: TOST against its margin
            assert row["method"].startswith("TOST") and row["margin"] == 0.03 and 0 <= row["p_equivalence"] <= 1
            continue
        assert row["method"] in ("Student t", "exact sign-flip (no spread: t undefined)") and row["decided_by"]
        assert 0 <= row["p_value"] <= 1 and "p_holm" in row and "smallest_effect" in row
    # With 3 repeats, before the first look (decide.start = 5), no claim is tested: the summary says so in words
    # (the sign-flip floor's wording is tested in tests/test_claims.py).
    assert "none can be family-wise significant" in metrics["summary"]["family_caveat"]


def test_report_lists_every_claim_of_the_experiments_it_ran(workdir):
    text = (workdir / "reports/report.md").read_text()
    for claim_id in ("circles.overfit_gap", "circles.test_peaks_then_falls", "circles.dropout_raises_test"):
        assert f"#### `{claim_id}`:" in text
    assert "## circles" in text and "## imdb" not in text
    assert "**circles**: `generated`" in text  # the data source is in the header
    assert "## Provenance" in text and "| stage | MLflow experiment |" in text
    assert "## How to read the verdicts" in text and "| 3 | normal |" in text  # calibration at the repeats used
    assert "Student t: one-sided p = " in text and "exact sign-flip p = " in text
    # Sequential verdicts (params.yaml: decide.sequential): the looks, their alphas and Holm's input in words.
    assert "**Sequential looks**" in text and "measured mean [t interval, 95% unless stated]" in text
    assert "(their sequential p-values)" in text
    # 3 repeats, before the first look (decide.start = 5): how far each claim is from a decision.
    assert re.search(r"inconclusive</span> at 3 repeats; about \d+ needed", text)
    for image in re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", text):
        assert (workdir / "reports" / image).is_file()
    assert (workdir / "reports/figures/circles_dropout_grid.png").is_file()


def test_html_parses_and_embeds_every_figure_it_shows(workdir):
    page = (workdir / "reports/index.html").read_text()
    parser = Images()
    parser.feed(page)
    parser.close()
    assert parser.tags[:2] == ["html", "head"] and "table" in parser.tags
    assert len(parser.sources) == 3
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # Opens offline: nothing is loaded from a network; the only web links go to the local `mlflow ui`.
    assert not re.search(r'<(script|link|img|iframe|source)\b[^>]*(src|href)="https?:', page)
    assert set(re.findall(r'href="(https?://[^/"]+)', page)) <= {"http://127.0.0.1:5000"}


def test_mlflow_parent_runs_carry_the_ids_of_the_claims_that_use_them(workdir):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("regbench/circles")
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`regbench.claims` != ''")
    tags = {run.info.run_name: run.data.tags["regbench.claims"] for run in parents}
    assert "circles.overfit_gap" in tags["circles-overfit"] and "circles.dropout_raises_test" in tags["circles-dropout"]


def test_git_revision_is_dirty_for_code_changes_only(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "regbench").mkdir()
    (tmp_path / "regbench" / "engine.py").write_text("A = 1\n")
    (tmp_path / "dvc.lock").write_text("stages: {}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    clean = provenance.git_revision(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", clean)
    # DVC rewrites dvc.lock after every stage of a repro: the later stages' code is still the commit.
    (tmp_path / "dvc.lock").write_text("stages: {train: {}}\n")
    assert provenance.git_revision(tmp_path) == clean
    (tmp_path / "regbench" / "engine.py").write_text("A = 2\n")
    assert provenance.git_revision(tmp_path) == f"{clean}-dirty"
    assert provenance.git_revision(tmp_path / "regbench") == f"{clean}-dirty"


@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_chromium_with_verdict_badges_and_every_figure(workdir):
    dom = dump_dom((workdir / "reports/index.html").as_uri(), budget_ms=5000)
    claims = json.loads((workdir / "reports/claims_detail.json").read_text())["claims"]
    badges = re.findall(r'<span class="verdict verdict-([a-z-]+)">([a-z ]+)</span>', dom)
    # One in the summary table per claim, one in each section of a claim whose experiment ran (circles).
    assert len(badges) == len(claims) + sum(entry["experiment"] == "circles" for entry in claims.values())
    assert all(css == word.replace(" ", "-") for css, word in badges)
    assert {word for _, word in badges} <= {"reproduced", "refuted", "inconclusive", "not run"}
    figures = sorted(path.name for path in (workdir / "reports/figures").glob("*.png"))
    assert len(figures) == 3 and dom.count('<img src="data:image/png;base64,') == len(figures)
    alts = set(re.findall(r'<img [^>]*alt="([^"]+)"', dom))
    assert alts == {"circles learning curves", "circles published vs measured", "circles dropout_grid"}


def test_the_report_explains_weight_decay_against_l2_and_shows_both_pairs_side_by_side(tmp_path):
    """Hand-made imdb records: the SGD pair equal until epoch 3, the RMSprop pair apart from the start."""
    from regbench import config
    from regbench.report import build as report
    from regbench.train import records
    from tests.conftest import real_params

    params = config.parse(real_params())
    results_dir = tmp_path / "results"
    base = np.array([0.6, 0.45, 0.4, 0.42, 0.45])

    def stage(variant, data_loss, penalty, jitter=0.0):
        runs = []
        for repeat in range(5):
            loss = data_loss + 0.001 * repeat + np.array([0, 0, 0, 0, jitter * (repeat % 3)])
            record = {"member": variant, "grid_value": None, "repeat": repeat, "seed": repeat, "fold": None}
            record.update(status="ok", diverged_epoch=None, epochs=5, seconds=0.0, mlflow_run_id=None)
            curves = {m: np.full(5, 0.5) for m in claims.EPOCH_METRICS}
            curves.update(val_loss=loss + penalty, reg_loss=np.full(5, penalty))
            runs.append(records.Run(variant, repeat, None, "ok", curves, {}, None, repeat, record))
        directory = results_dir / f"imdb-{variant}"
        directory.mkdir(parents=True)
        records.write(directory, runs)
        (directory / "manifest.json").write_text(json.dumps({"data_manifest": {}}))

    stage("l2_sgd", base, 0.05)
    stage("weight_decay_sgd", base + np.array([0, 0, 0, 2e-4, 3e-4]), 0.0, jitter=1e-4)
    stage("l2", base, 0.06)
    stage("weight_decay", base + 0.3, 0.0, jitter=0.01)
    evaluation = claims.evaluate(claims.load_registry(REPO_ROOT / "claims.yaml"), params, results_dir)
    assert evaluation["claims"]["imdb.weight_decay_equals_l2_sgd"]["verdict"] == "reproduced"
    assert evaluation["claims"]["imdb.weight_decay_equals_l2"]["verdict"] == "refuted"
    figures = tmp_path / "figures"
    figures.mkdir()
    results = report.ExperimentResults(params, "imdb", results_dir)
    lines, drawn = report.weight_decay_section(results, params, evaluation, figures)
    text = "\n".join(lines)
    assert "rescales the penalty's gradient per weight" in text and "d = 2λ" in text
    assert "weight_decay 0.002) against `l2_sgd` (sgd, L2 0.001; 2λ = 0.002)" in text
    # Same-seed parting: the SGD pair first differs beyond 1e-4 at epoch 4, the RMSprop pair at epoch 1.
    assert "repeat 0: epoch 4 (largest 0.0003)" in text and "repeat 0: epoch 1 (largest 0.3)" in text
    assert drawn == ["imdb_weight_decay_vs_l2.png"] and (figures / drawn[0]).stat().st_size > 10_000


def test_the_summary_and_adaptive_repeats_tables_read_at_a_glance():
    """On the committed decide run: every claim of the rounds table linked to its section with its verdict
    badge; every interval judged at a sequential look states that look's level (98.2%, not the nominal 95%)."""
    from regbench import config
    from regbench.report import build as report

    params = config.load(REPO_ROOT / "params.yaml")
    evaluation = json.loads((REPO_ROOT / "reports/claims_detail.json").read_text())
    rounds = json.loads((REPO_ROOT / "reports/decide_rounds.json").read_text())
    rows = [line for line in report.adaptive_lines(rounds, evaluation, params) if line.startswith("| [`")]
    summary = report.summary_table(evaluation)
    assert "measured mean [t interval, 95% unless stated]" in summary[0]
    assert len(rows) == len(evaluation["claims"]) == len(summary) - 2
    for row, line, (claim_id, entry) in zip(rows, summary[2:], evaluation["claims"].items(), strict=True):
        assert row.startswith(f"| [`{claim_id}`](#{report._anchor(claim_id)}) | {report.badge(entry['verdict'])} |")
        if "ci_low" in entry:
            level = f"] at {entry['confidence']:.1%} |"
            assert level in row and level in line and 0.95 < entry["confidence"] < 1


def test_variants_that_did_not_learn_are_flagged_in_words(tmp_path):
    """Hand-made sonar records (majority class 111 of 208 = 0.534): a variant at that rate on validation and
    training is flagged, one that memorized its training rows (validation at chance only) is not."""
    from regbench import config
    from regbench.report import build as report
    from regbench.train import records
    from tests.conftest import real_params

    params = config.parse(real_params())
    results_dir = tmp_path / "results"
    chance = 111 / 208
    finals = {"dropout_maxnorm": (chance, chance + 0.005), "baseline": (0.83, 0.99), "smaller": (chance, 0.98)}
    for variant, (validation, train) in finals.items():
        runs = []
        for repeat in range(3):
            record = {"member": variant, "grid_value": None, "repeat": repeat, "seed": repeat, "fold": None}
            record.update(status="ok", diverged_epoch=None, epochs=4, seconds=0.0, mlflow_run_id=None)
            record["train_eval_accuracy"] = train
            curves = {m: np.full(4, 0.5) for m in claims.EPOCH_METRICS}
            curves["val_accuracy"] = np.array([0.5, 0.52, 0.53, validation])
            runs.append(records.Run(variant, repeat, None, "ok", curves, {}, None, repeat, record))
        directory = results_dir / f"sonar-{variant}"
        directory.mkdir(parents=True)
        records.write(directory, runs)
        balance = {"class_balance": {"y_train": {"0": 111, "1": 97}}}  # CV: validation rows are training rows
        (directory / "manifest.json").write_text(json.dumps({"data_manifest": balance}))
    results = report.ExperimentResults(params, "sonar", results_dir)
    reason = results.did_not_learn("dropout_maxnorm")
    assert reason is not None and "majority-class rate of 0.5337" in reason and "most frequent class" in reason
    assert results.did_not_learn("baseline") is None and results.did_not_learn("smaller") is None
    flags = report.not_learned({"sonar": results})
    assert list(flags) == ["sonar-dropout_maxnorm"]
    assert any(
        line.startswith("- `sonar-dropout_maxnorm`: validation accuracy") for line in report.not_learned_lines(flags)
    )
    rows = {line.split(" | ")[0]: line for line in report.published_table(results, {}, params)[2:]}
    assert rows["| dropout_maxnorm"].endswith("| **no**: see below |") and rows["| baseline"].endswith("| yes |")


@pytest.mark.skipif(not (REPO_ROOT.parent / "shared").exists(), reason="no shared/ beside the repository")
def test_the_committed_reports_source_links_open_the_seed_tutorials():
    """The links are relative to reports/ and reach ../shared/seeds/ beside the clone (as in CI)."""
    text = (REPO_ROOT / "reports" / "report.md").read_text()
    links = set(re.findall(r"\]\((\.\./\.\./shared/seeds/[^)]+)\)", text))
    declared = {claim.source for claim in claims.load_registry(REPO_ROOT / "claims.yaml").claims}
    assert {link.rsplit("/", 1)[1] for link in links} == declared
    assert all((REPO_ROOT / "reports" / link).resolve().is_file() for link in links)
