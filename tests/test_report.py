"""The report renders from real (tiny) train results: Markdown, one self-contained HTML page, figures."""

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from regbench.claims import evaluate, schema, verdict
from regbench.report import build, render, sections
from regbench.report import figures as report_figures
from regbench.report import text as report_text
from regbench.report.load import ExperimentResults
from regbench.train import provenance
from regbench.train.records import EPOCH_METRICS
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
    declared = schema.load_registry(workdir / "claims.yaml").claims
    circles = {k: v for k, v in metrics["claims"].items() if k.startswith("circles.")}
    assert len(circles) == sum(claim.experiment == "circles" for claim in declared)
    assert all(v["verdict"] in verdict.LABELS and v["repeats"] == 3 for v in circles.values())
    assert metrics["claims"]["imdb.bigger_noisier"]["verdict"] == "not run"
    assert metrics["summary"]["tested"] == len(circles) and metrics["summary"]["claims"] == len(declared)
    # The new statistics travel with every verdict, so `dvc metrics diff` shows them too.
    for claim_id, row in circles.items():
        if claim_id == "circles.rate_too_low_no_effect":  # a sameness claim: TOST against its margin
            assert row["margin"] == 0.03
            continue
        # 3 repeats, before the first look: no test made, so no p-value; the numbers are still shown.
        assert "mean" in row and "smallest_effect" in row
    # With 3 repeats, before the first look (decide.start = 5), no claim is tested: the summary says so in words
    # (the sign-flip floor's wording is tested in tests/test_claims.py).
    assert "none can be family-wise significant" in metrics["summary"]["family_caveat"]


def test_report_lists_every_claim_of_the_experiments_it_ran(workdir):
    text = (workdir / "reports/report.md").read_text()
    for claim_id in ("circles.overfit_gap", "circles.test_peaks_then_falls", "circles.dropout_raises_test"):
        assert re.search(rf"#### `{re.escape(claim_id)}`\n\n\*\*(inconclusive|undecided)\*\*: ", text)
    assert "## circles" in text and "## imdb" not in text
    assert "**circles**: `generated`" in text  # the data source is in the header
    assert (
        "## Provenance" in text and "| `train@circles-overfit` | `regbench/circles` | ``tags.`regbench.stage`" in text
    )
    assert "## How to read the verdicts" in text and "| 3 | normal |" in text  # calibration at the repeats used
    assert "Student t: one-sided p = " in text and "exact sign-flip p = " in text
    # Sequential verdicts (params.yaml: decide.sequential): the looks, their alphas and Holm's input in words.
    assert "**Sequential looks**" in text and "measured mean [t interval, 95% unless stated]" in text
    # (the claims stage's typed verdicts put every decision in one family instead: verdict.md)
    assert "(their sequential p-values)" in text or "in one Holm family" in text
    # 3 repeats, before the first look (decide.start = 5): how far each claim is from a decision.
    # (with the claims stage's typed verdicts: "undecided (before the first look)", verdict.md's `stopped`)
    assert re.search(r"\*\*inconclusive\*\* at 3 repeats; about \d+ needed", text) or re.search(
        r"\*\*undecided\*\* \(before the first look\)", text
    )
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
    # Opens offline: nothing is loaded from a network (the page's policy allows inline styles and data: images
    # only); its web links are the tutorials' own pages, none goes to an MLflow server.
    assert not re.search(r'<(script|link|img|iframe|source)\b[^>]*(src|href)="https?:', page)
    assert "default-src 'none'" in page
    assert set(re.findall(r'href="(https?://[^/"]+)', page)) <= {
        "https://machinelearningmastery.com",
        "https://medium.com",
    }


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
    badges = re.findall(r'<span class="verdict verdict-([a-z-]+)">([a-z ,]+)</span>', dom)
    # At least one on the first page and one in the summary table per claim, and one in each section of a
    # claim whose experiment ran (circles); the summary's counts and typed verdicts' detail add more.
    assert len(badges) >= 2 * len(claims) + sum(entry["experiment"] == "circles" for entry in claims.values())
    assert all(css == render.BADGES[word] for css, word in badges)
    figures = sorted(path.name for path in (workdir / "reports/figures").glob("*.png"))
    assert len(figures) == 3 and dom.count('<img src="data:image/png;base64,') == len(figures)
    alts = set(re.findall(r'<img [^>]*alt="([^"]+)"', dom))
    assert alts == {"circles learning curves", "circles published vs measured", "circles dropout_grid"}


def test_the_report_explains_weight_decay_against_l2_and_shows_both_pairs_side_by_side(tmp_path):
    """Hand-made imdb records: the SGD pair equal until epoch 3, the RMSprop pair apart from the start."""
    from regbench import config
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
            curves = {m: np.full(5, 0.5) for m in EPOCH_METRICS}
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
    evaluation = evaluate.evaluate(schema.load_registry(REPO_ROOT / "claims.yaml"), params, results_dir)
    assert evaluation["claims"]["imdb.weight_decay_equals_l2_sgd"]["verdict"] == "reproduced"
    assert evaluation["claims"]["imdb.weight_decay_equals_l2"]["verdict_alone"] == "contradicted"
    figures = tmp_path / "figures"
    figures.mkdir()
    results = ExperimentResults(params, "imdb", results_dir)
    experiments, drawn = build.experiment_sections(params, evaluation, {"imdb": results}, figures)
    text = render.markdown("weight_decay.md.j2", experiment=experiments[0])
    assert "rescales the penalty's gradient per weight" in text and "d = 2λ" in text
    assert "weight_decay 0.002) against `l2_sgd` (sgd, L2 0.001; 2λ = 0.002)" in text
    # Same-seed parting: the SGD pair first differs beyond 1e-4 at epoch 4, the RMSprop pair at epoch 1.
    assert "repeat 0: epoch 4 (largest 0.0003)" in text and "repeat 0: epoch 1 (largest 0.3)" in text
    assert "![imdb weight decay vs L2](figures/imdb_weight_decay_vs_l2.png)" in text
    assert "imdb_weight_decay_vs_l2.png" in drawn
    assert (figures / "imdb_weight_decay_vs_l2.png").stat().st_size > 10_000


def test_the_summary_and_adaptive_repeats_tables_read_at_a_glance():
    """On the committed decide run: every claim of the rounds table linked to its section with its verdict
    badge; every interval judged at a sequential look states that look's level (98.2%, not the nominal 95%)."""
    evaluation = json.loads((REPO_ROOT / "reports/claims_detail.json").read_text())
    rows = [line for line in sections.looks_table(evaluation).split("\n") if line.startswith("| [`")]
    summary = sections.summary_table(evaluation).split("\n")
    assert "measured mean [t interval, 95% unless stated]" in summary[0]
    assert len(rows) == len(evaluation["claims"]) == len(summary) - 2
    for row, line, (claim_id, entry) in zip(rows, summary[2:], evaluation["claims"].items(), strict=True):
        assert row.startswith(f"| [`{claim_id}`]({report_text.anchor(claim_id)}) | **{entry['verdict']}** |")
        if "ci_low" in entry:
            level = f"] at {entry['confidence']:.1%} |"
            assert level in row and level in line and 0.95 < entry["confidence"] < 1


def test_variants_that_did_not_learn_are_flagged_in_words(tmp_path):
    """Hand-made sonar records (majority class 111 of 208 = 0.534): a variant at that rate on validation and
    training is flagged, one that memorized its training rows (validation at chance only) is not."""
    from regbench import config
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
            curves = {m: np.full(4, 0.5) for m in EPOCH_METRICS}
            curves["val_accuracy"] = np.array([0.5, 0.52, 0.53, validation])
            runs.append(records.Run(variant, repeat, None, "ok", curves, {}, None, repeat, record))
        directory = results_dir / f"sonar-{variant}"
        directory.mkdir(parents=True)
        records.write(directory, runs)
        balance = {"class_balance": {"y_train": {"0": 111, "1": 97}}}  # CV: validation rows are training rows
        (directory / "manifest.json").write_text(json.dumps({"data_manifest": balance}))
    results = ExperimentResults(params, "sonar", results_dir)
    reason = results.did_not_learn("dropout_maxnorm")
    assert reason is not None and "majority-class rate of 0.5337" in reason and "most frequent class" in reason
    assert results.did_not_learn("baseline") is None and results.did_not_learn("smaller") is None
    flags = sections.not_learned({"sonar": results})
    assert list(flags) == ["sonar-dropout_maxnorm"]
    lines = sections.not_learned_lines(flags).split("\n")
    assert any(line.startswith("- `sonar-dropout_maxnorm`: validation accuracy") for line in lines)
    table = sections.published_table(results, {}, params.claims.confidence).split("\n")[2:]
    rows = {line.split(" | ")[0]: line for line in table}
    assert rows["| dropout\\_maxnorm"].endswith("| **no**: see below |") and rows["| baseline"].endswith("| yes |")


@pytest.mark.skipif(not (REPO_ROOT.parent / "shared").exists(), reason="no shared/ beside the repository")
def test_the_committed_reports_source_links_open_the_seed_tutorials():
    """The links are relative to reports/ and reach ../shared/seeds/ beside the clone (as in CI)."""
    text = (REPO_ROOT / "reports" / "report.md").read_text()
    links = set(re.findall(r"\]\((\.\./\.\./shared/seeds/[^)]+)\)", text))
    declared = {claim.source for claim in schema.load_registry(REPO_ROOT / "claims.yaml").claims}
    assert {link.rsplit("/", 1)[1] for link in links} == declared
    assert all((REPO_ROOT / "reports" / link).resolve().is_file() for link in links)


# --- a safe report (issue 28) ------------------------------------------------------------------------

HOSTILE = {
    "id": "circles.x<script>alert('id')</script>",
    "statement": "<img src=x onerror=alert('statement')> <script>alert('statement')</script> [go](javascript:alert(1))",
    "published": '<img src="figures/../../../outside.png" onerror="alert(1)"> ![p](figures/../../../outside.png)',
    "source": '../../../../etc/passwd"><script>alert(1)</script>',
}


class Markup(HTMLParser):
    """Every tag and attribute of a page, and its visible text (outside <style>)."""

    def __init__(self):
        super().__init__()
        self.tags, self.attributes, self.text, self._style = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        self._style = tag == "style"

    def handle_endtag(self, tag):
        self._style = False if tag == "style" else self._style

    def handle_data(self, data):
        if not self._style:
            self.text.append(data)


def parse(page: str) -> Markup:
    parser = Markup()
    parser.feed(page)
    parser.close()
    return parser


def png(path, shade=0):
    from regbench.train.plots import pyplot

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(1, 1))
    axis.plot([0, 1], [shade, 1])
    figure.savefig(path)
    plt.close(figure)
    return path


def assert_inert(page: str, figures_dir):
    """No executable markup, no link that runs code, and only figures from ``figures_dir`` embedded."""
    markup = parse(page)
    assert not {"script", "iframe", "object", "embed", "svg", "link", "form", "base"} & set(markup.tags)
    assert markup.tags.count("meta") <= 2  # charset and the content security policy, nothing injected
    assert not [a for a in markup.attributes if a[1].startswith("on")]
    assert not [a for a in markup.attributes if a[2].strip().lower().startswith(("javascript:", "vbscript:"))]
    allowed = {base64.b64encode(path.read_bytes()).decode() for path in figures_dir.glob("*.png")}
    for tag, name, value in markup.attributes:
        if tag == "img" and name == "src":
            assert value.startswith("data:image/png;base64,") and value.split(",", 1)[1] in allowed


def test_hostile_claim_text_comes_out_as_text_and_nothing_outside_reports_is_embedded(workdir, tmp_path):
    """A claim whose id, statement, published figure and source carry <script>, <img onerror>, a javascript:
    link and ../ paths: the Markdown holds them escaped, the HTML as visible text, never as markup."""
    from regbench import config

    outside = png(tmp_path / "outside.png", shade=0.5)  # what a ../ path would reach: reports/../outside.png
    out = tmp_path / "reports"
    shutil.copytree(workdir / "reports", out)
    evaluation = json.loads((out / "claims_detail.json").read_text())
    entry = dict(evaluation["claims"]["circles.overfit_gap"], **{k: v for k, v in HOSTILE.items() if k != "id"})
    evaluation["claims"][HOSTILE["id"]] = entry
    params = config.load(workdir / "params.yaml")
    build.build(params, evaluation, workdir / "results/train", out)

    # The Markdown is safe in any CommonMark viewer, even one that passes raw HTML through (markdown-it with
    # html on, as this report's own renderer had it): the hostile text is escaped or inside code spans.
    from markdown_it import MarkdownIt

    viewed = MarkdownIt("commonmark", {"html": True}).enable("table").render((out / "report.md").read_text())
    assert_inert(viewed.replace('<img src="figures/', '<img data-figure="'), out / "figures")
    page = (out / "index.html").read_text()
    assert_inert(page, out / "figures")
    assert base64.b64encode(outside.read_bytes()).decode() not in page
    # The source link names a file in ../shared/seeds/, whatever its text: no '/' leads elsewhere.
    seeds = [value for _, name, value in parse(page).attributes if name == "href" and "shared/seeds/" in value]
    assert seeds and all("/" not in link.split("shared/seeds/", 1)[1] for link in seeds)
    text = " ".join(parse(page).text)
    # The hostile text is there, to be read: as characters, in the first page, the summary and the section.
    assert text.count("<img src=x onerror=alert('statement')>") == 2  # first page and section
    assert text.count("alert('id')") == 2  # summary table and section heading


def test_images_are_embedded_only_from_inside_the_report_folder(tmp_path):
    """../ paths, absolute paths, symlinks leading out, and non-PNG files are shown as their alt text."""
    reports = tmp_path / "reports"
    (reports / "figures").mkdir(parents=True)
    inside = png(reports / "figures" / "inside.png")
    outside = png(tmp_path / "outside.png", shade=0.7)
    (reports / "figures" / "link.png").symlink_to(outside)
    (reports / "figures" / "text.png").write_text("not a picture")
    markdown = "\n\n".join(
        [
            "![ok](figures/inside.png)",
            "![up](figures/../../outside.png)",
            f"![absolute]({outside})",
            "![link](figures/link.png)",
            "![remote](https://example.org/x.png)",
            '![html](<figures/inside.png" onerror="alert(1)>)',
            '<img src="figures/../../outside.png">',
        ]
    )
    page = render.page(markdown, "t", reports)
    sources = [value for tag, name, value in parse(page).attributes if tag == "img" and name == "src"]
    assert sources == ["data:image/png;base64," + base64.b64encode(inside.read_bytes()).decode()]
    assert base64.b64encode(outside.read_bytes()).decode() not in page
    assert page.count('class="missing-figure"') == 5
    assert "&lt;img src=" in page  # the raw HTML line is text
    # A variant name from params.yaml makes a figure file name that stays in reports/figures.
    for name in ("../../../../victim", "a/b", "..", "x\\..\\y"):
        path = (reports / "figures" / report_figures.file_name("circles", name)).resolve()
        assert path.parent == (reports / "figures").resolve()


def test_markdown_escapes_outside_text_and_keeps_numbers_plain():
    assert report_text.escape("<b>x</b>") == "\\<b>x\\</b>"
    assert report_text.escape("# not a heading") == "\\# not a heading"
    assert report_text.escape("1. not a list") == "1\\. not a list"
    assert report_text.escape("0.757 -> 0.814") == "0.757 -> 0.814"
    assert report_text.escape("a | b\nc") == "a \\| b c"
    assert report_text.code("a`b") == "``a`b``"
    rendered = render.renderer(Path(".")).render(f"{report_text.escape('**x** <i>y</i> [z](javascript:1)')}")
    assert rendered == "<p>**x** &lt;i&gt;y&lt;/i&gt; [z](javascript:1)</p>\n"


# --- the committed report: numbers that agree, nothing machine-specific (issues 24, 25) ----------------


def visible_numbers(text: str) -> list[str]:
    return re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?%?", text)


def markdown_text(markdown: str) -> str:
    """The Markdown as a reader sees it: no images, no link destinations, no backslash escapes."""
    markdown = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", markdown)
    markdown = re.sub(r"\]\((?:<[^>]*>|[^)]*)\)", "]", markdown)
    return re.sub(r"\\(.)", r"\1", markdown)


def test_markdown_and_html_agree_on_every_number_and_interval_level(workdir):
    markdown = markdown_text((workdir / "reports/report.md").read_text())
    page = " ".join(parse((workdir / "reports/index.html").read_text()).text)
    numbers = visible_numbers(markdown)
    assert len(numbers) > 200 and numbers == visible_numbers(page)
    levels = r"(?:at |\()(\d+(?:\.\d)?%)(?: interval)?"
    assert re.findall(levels, markdown) == re.findall(levels, page) and "95.0%" in re.findall(levels, page)


def test_the_mlflow_names_the_report_gives_are_those_the_runs_are_logged_under():
    from regbench.train import tracking

    assert build.STAGE_TAG == tracking.STAGE_TAG
    assert tracking.mlflow_ui_command(f"sqlite:///{tracking.DEFAULT_STORE}") == build.UI_COMMAND


def test_the_report_is_a_function_of_code_params_and_data(workdir, tmp_path):
    """Built again elsewhere, under another MLflow store: the same bytes, and no path, host, time or run id."""
    from regbench import config

    params = config.load(workdir / "params.yaml")
    evaluation = json.loads((workdir / "reports/claims_detail.json").read_text())
    out = tmp_path / "elsewhere" / "reports"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
        patch.chdir(tmp_path)
        build.build(params, evaluation, workdir / "results/train", out)
    for name in ("report.md", "index.html"):
        again, first = (out / name).read_text(), (workdir / "reports" / name).read_text()
        assert again == first
        assert str(workdir) not in first and str(tmp_path) not in first and "sqlite:////" not in first
        assert "127.0.0.1" not in first and not re.search(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", first)
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("regbench/circles")
    run_ids = {run.info.run_id for run in client.search_runs([experiment.experiment_id], max_results=1000)}
    assert len(run_ids) > 3 and not any(run_id in (workdir / "reports/report.md").read_text() for run_id in run_ids)


# --- the first page, built on the claims stage's typed verdicts (issue 24) ------------------------------

LABELS = ("reproduced", "reproduced, smaller than published", "no effect of the published size", "contradicted")


def typed_entry(claim_id, label, **decision):
    """A claims_detail.json entry in the shape /work/coord/verdict.md documents (`decision`: the Verdict)."""
    entry = {
        "experiment": claim_id.split(".")[0],
        "source": "000_4a83075acf8aa53d.txt",
        "statement": f"Statement of {claim_id}.",
        "published": "0.757 -> 0.814",
        "published_value": 0.057,
        "measure": {"kind": "final", "metric": "val_accuracy"},
        "test": {"kind": "paired", "variant": "dropout", "versus": "overfit", "direction": "greater"},
        "verdict": label,
        "verdict_alone": label,
        "repeats": 15,
        "mean": 0.0057,
        "ci_low": -0.014,
        "ci_high": 0.0254,
        "confidence": 0.982,
        "improvement": {"share": 0.8, "ties": 1},
        "values": [0.0057] * 15,
        "variant_means": {"dropout": 0.8, "overfit": 0.7943},
    }
    entry["decision"] = {
        "claim_id": claim_id,
        "label": label,
        "label_alone": label,
        "code": {"undecided": 0, "not run": None}.get(label, 1),
        "why": f"Why {claim_id} is {label}, in one sentence.",
        "kind": "directional",
        "direction": "established",
        "size": "smaller than the smallest effect",
        "statistic": "mean difference (Student t)",
        "unit": "accuracy",
        "repeats": 15,
        "mean": 0.0057,
        "ci_low": -0.014,
        "ci_high": 0.0254,
        "confidence": 0.982,
        "line": 0.0,
        "smallest_effect": 0.0285,
        "published_value": 0.057,
        "published": "0.757 -> 0.814",
        "prediction_low": -0.046,
        "prediction_high": 0.058,
        "published_plausible": True,
        "improvement": 0.8,
        "p_family": 0.004,
        "stopped": "",
        "look_chances": [],
        "reason": "",
        **decision,
    }
    return entry


def test_the_first_page_names_each_tutorial_and_gives_every_claim_in_words(tmp_path):
    from regbench import config
    from tests.conftest import real_params

    params = config.parse(real_params())
    claims = {f"circles.claim{i}": typed_entry(f"circles.claim{i}", label) for i, label in enumerate(LABELS)}
    claims["circles.open"] = typed_entry(
        "circles.open",
        "undecided",
        stopped="stopped on the budget before look 4 (20 repeats)",
        look_chances=[[20, 0.41]],
    )
    claims["imdb.noisier"] = {
        **typed_entry("imdb.noisier", "not run"),
        "decision": {"label": "not run", "kind": "not run", "why": "", "repeats": 0, "reason": "not configured"},
    }
    for key in ("mean", "ci_low", "ci_high", "confidence"):
        claims["imdb.noisier"].pop(key)
    family = {label: 1 for label in (*LABELS, "undecided")}
    summary = {"claims": 6, "tested": 5, "alpha_one_sided": 0.025, "family": family, "decisions": 14}
    evaluation = {"summary": {**summary, "alone": family}, "claims": claims, "published_figures": {}}
    out = tmp_path / "reports"
    build.build(params, evaluation, tmp_path / "no-results", out)

    markdown = (out / "report.md").read_text()
    first_page = markdown.split("\n## Summary\n")[0]
    assert "## How to Reduce Overfitting With Dropout Regularization in Keras" in first_page
    assert "## Learning Keras from scratch (5), overfitting and underfitting on IMDB" in first_page
    assert first_page.index("Dropout Regularization in Keras") < first_page.index("scratch (5)")  # params order
    for claim_id, entry in claims.items():
        if entry["verdict"] == "not run":
            continue
        assert f"- **{entry['verdict']}**: Statement of {claim_id}.\\\n" in first_page
        assert f"Why {claim_id} is {entry['verdict']}, in one sentence." in first_page
    assert (
        first_page.count(
            "*Published:* 0.757 -> 0.814 (0.057 in the unit measured). *Ours:* 0.0057 [-0.014, 0.0254] (98.2% "
            "interval) over 15 repeats; one run of ours falls in [-0.046, 0.058]; unit: accuracy."
        )
        == len(LABELS) + 1
    )
    assert "- **not run**: Statement of imdb.noisier.\\" in first_page and "Not run: not configured.\n" in first_page
    # The summary leads with the family-wise counts; every new label gets its own badge on the page.
    summary_line = markdown.split("\n## Summary\n")[1]
    assert summary_line.index("Family-wise") < summary_line.index("Each claim judged alone")
    page = (out / "index.html").read_text()
    badges = set(re.findall(r'<span class="verdict verdict-([a-z-]+)">([a-z ,]+)</span>', page))
    assert {word for _, word in badges} == {*LABELS, "undecided", "not run"}
    assert ("partial", "reproduced, smaller than published") in badges and ("bad", "contradicted") in badges
    row = next(line for line in sections.summary_table(evaluation).split("\n") if "circles.open" in line)
    assert "**undecided** (stopped on the budget before look 4 (20 repeats))" in row
    lines = sections.claim_lines(claims["circles.open"], {})
    assert "- Verdict: **undecided** family-wise; judged alone: **undecided** (family-wise p 0.004)." in lines
    assert "published 0.057 lies inside it: one run of this setup could have given it." in lines
    assert "chance of deciding the direction at the remaining looks: by 20 repeats 41%." in lines
