"""DVC plots: an offline page template by default, loss and accuracy of every variant plotted, lines told apart."""

import configparser
import json
import re

import pytest
import yaml

from regbench.config import load
from regbench.train.plots import line_style
from tests.conftest import REPO_ROOT


def test_the_default_html_template_is_the_offline_one_and_loads_nothing_from_the_network():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / ".dvc" / "config")
    # DVC resolves a relative plots.html_template against the .dvc directory (dvc/commands/plots.py).
    template = (REPO_ROOT / ".dvc" / config["plots"]["html_template"]).resolve()
    page = template.read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{scripts}" not in page  # {scripts} would bring DVC's CDN tags back
    assert not re.search(r"<script[^>]+src=", page)
    for library in ("vega", "vega-lite", "vega-embed"):
        assert f"/* {library} " in page and (REPO_ROOT / "plots" / f"LICENSE-{library}").exists()


def test_every_trained_variant_has_its_loss_and_accuracy_plotted_training_and_validation():
    plots = {
        name: definition
        for entry in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["plots"]
        for name, definition in entry.items()
    }
    params = load(REPO_ROOT / "params.yaml")
    for run, target in params.train.runs.items():
        variant = params.experiments[target.experiment].variants[target.variant]
        if len(variant.members) > 1:
            continue  # grids: see the comment above `plots:` in dvc.yaml
        for kind in ("loss", "accuracy"):
            # One plot per experiment, or per family of its variants (dvc.yaml): in at least one of them.
            family = [
                plot
                for name, plot in plots.items()
                if re.fullmatch(rf"{target.experiment}(-[a-z_]+)?-{kind}", name)
                and f"results/train/{run}/curves.csv" in plot["y"]
            ]
            assert family, (run, kind)
            for plot in family:
                assert plot["x"] == "epoch" and plot["template"] == "curves"  # .dvc/plots/curves.json
                assert plot["y"][f"results/train/{run}/curves.csv"] == [kind, f"val_{kind}"], (run, kind)


def test_no_plot_draws_more_than_six_variants_so_a_changed_one_stands_out_in_plots_diff():
    for entry in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["plots"]:
        ((name, plot),) = entry.items()
        assert len(plot["y"]) <= 6, name


def test_the_curves_template_colours_each_variant_and_column_and_dashes_each_revision():
    template = json.loads((REPO_ROOT / ".dvc" / "plots" / "curves.json").read_text())
    assert template["data"]["values"] == "<DVC_METRIC_DATA>"
    assert template["encoding"]["color"]["field"] == "filename::field"
    assert template["encoding"]["strokeDash"]["field"] == "rev"
    # An optional DVC anchor must be present: only then does DVC add the filename::field column to the data.
    assert template["encoding"]["tooltip"] == "<DVC_METRIC_TOOLTIP>"
    # Legend labels whole: Vega-Lite cuts them at 160 px, and "circles-input_dropout/curves.csv::loss" and
    # "...::val_loss" both became "circles-input_dropout/curves.csv::..." (seen in Chromium).
    assert template["encoding"]["color"]["legend"]["labelLimit"] == 0
    # Epoch ticks are whole numbers also on short runs (train.max_epochs=2 drew 0.5, 1.5).
    assert template["encoding"]["x"]["axis"]["tickMinStep"] == 1


@pytest.mark.parametrize(("lines", "points"), [(2, 5), (2, 20), (10, 20), (4, 400), (10, 300)])
def test_coinciding_report_curves_put_their_markers_at_different_points(lines, points):
    """The report's figures: lines whose curves coincide (imdb's SGD weight decay and L2 pair, circles'
    overfit and maxnorm) are told apart by markers, which must not sit on top of each other."""
    styles = [line_style(index, lines, points) for index in range(lines)]
    assert len({(style["color"], style["linestyle"], style["marker"]) for style in styles}) == lines
    marked = [set(range(points)[style["markevery"][0] :: style["markevery"][1]]) for style in styles]
    assert all(len(points_marked) >= min(8, points // lines) for points_marked in marked)
    for first in range(lines):
        for second in range(first + 1, lines):
            assert not marked[first] & marked[second], (first, second)


def test_report_figures_tick_epochs_at_whole_numbers(tmp_path, monkeypatch):
    """A few epochs (imdb's 20, a quick run's 5) drew ticks at 2.5 and 7.5 before MaxNLocator(integer=True)."""
    import numpy as np

    from regbench.train import plots

    drawn = []
    monkeypatch.setattr(plots, "save", lambda figure, path: drawn.append(figure))
    repeats = np.array([[0.9, 0.7, 0.6, 0.55, 0.5], [0.8, 0.7, 0.6, 0.5, 0.45]])
    curves = {variant: dict.fromkeys(plots.PANELS.values(), repeats) for variant in ("a", "b")}
    plots.plot_learning_curves(curves, tmp_path / "curves.png", "t", 400, "variant")
    plots.plot_side_by_side({"p": {"a": repeats, "b": repeats}}, tmp_path / "pair.png", "t", "loss", 400)
    axes = [axis for figure in drawn for axis in figure.axes]
    assert len(axes) == 5
    for axis in axes:
        ticks = [tick for tick in axis.get_xticks() if 1 <= tick <= 5]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
