"""The records module: histories.csv and runs.json round trip, and the fold-then-repeat averages."""

import numpy as np
import pytest

from regbench.train import records
from regbench.train.run import History, Run


def result(member="v", repeat=0, fold=None, losses=(0.5, 0.25), grid_value=None, status="ok"):
    history = History()
    for epoch, loss in enumerate(losses):
        history.append(
            {"loss": loss, "accuracy": 0.5, "val_loss": loss + 0.1 * epoch, "val_accuracy": 0.6, "reg_loss": 0}
        )
    history.status = status
    return Run(
        member, grid_value, None, repeat, 10 + repeat, fold, history=history, evaluations={"train_eval_accuracy": 0.75}
    )


def test_written_records_read_back_as_the_runs_that_were_written(tmp_path):
    results = [
        result("g[l2=0.1]", 0, None, (1 / 3, 0.2), grid_value=0.1),
        result("g[l2=0.1]", 1, None, (0.4,), grid_value=0.1),
        result("g[l2=0.0]", 0, None, (), grid_value=0.0, status="diverged"),
    ]
    written = records.to_runs(results)
    records.write(tmp_path, written)
    text = (tmp_path / records.HISTORIES).read_bytes()
    assert text.startswith(b"member,grid_value,repeat,seed,fold,epoch,loss,accuracy,val_loss,val_accuracy,reg_loss\r\n")
    # Seven significant digits; a grid value as Python prints it; an empty fold.
    assert b"g[l2=0.1],0.1,0,10,,1,0.3333333,0.5,0.3333333,0.6,0\r\n" in text
    read = records.load_runs(tmp_path)
    assert [(r.member, r.repeat, r.fold, r.status, r.grid_value) for r in read] == [
        (r.member, r.repeat, r.fold, r.status, r.grid_value) for r in written
    ]
    np.testing.assert_allclose(read[0].curves["loss"], [1 / 3, 0.2], rtol=1e-6)
    assert len(read[2].curves["loss"]) == 0
    assert read[0].finals["train_eval_accuracy"] == 0.75 and read[0].finals["best_val_loss_epoch"] == 2


def test_folds_are_averaged_within_a_repeat_then_repeats_and_an_incomplete_repeat_is_left_out(tmp_path):
    runs = records.to_runs(
        [
            result(repeat=0, fold=0, losses=(0.2, 0.2)),
            result(repeat=0, fold=1, losses=(0.4, 0.6)),
            result(repeat=1, fold=0, losses=(0.3, 0.3)),
            result(repeat=1, fold=1, losses=(0.9,), status="diverged"),
            result(repeat=2, fold=0, losses=(1.0, 1.0)),
            result(repeat=2, fold=1, losses=(1.0, 1.0)),
        ]
    )
    last = records.per_repeat(runs, lambda run: run.curves["loss"][-1])
    assert last == {10: pytest.approx(0.4), 12: pytest.approx(1.0)}  # keyed by seed
    np.testing.assert_allclose(records.repeat_curves(runs, "v", "loss"), [[0.3, 0.4], [1.0, 1.0]])
    summary = records.summarize(runs, [("v", None)], cv=True)["v"]
    assert (summary["runs"], summary["diverged"], summary["repeats_ok"], summary["status"]) == (6, 1, 2, "diverged")
    assert summary["final_loss"] == pytest.approx(0.7) and summary["final_loss_std"] == pytest.approx(0.3)
    assert summary["cv_accuracy"] == summary["final_val_accuracy"]
    records.write_curves(tmp_path / "curves.csv", runs, ["v"])
    lines = (tmp_path / "curves.csv").read_text().splitlines()
    assert lines[0] == "epoch,loss,val_loss,accuracy,val_accuracy" and lines[2].startswith("2,0.7,")
