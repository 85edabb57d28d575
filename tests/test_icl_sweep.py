"""The capacity sweep runs end to end on a tiny grid and resumes without retraining."""
import csv

import pytest
import torch

from iclconstruct.errors import OutOfRangeError
from clitools import run
from iclconstruct.icl.sweep import reference_predictors, run_sweep

torch.set_num_threads(1)




def test_tiny_sweep_end_to_end_and_resume(tmp_path, capsys):
    argv = ["sweep", "--out", str(tmp_path), "--layers", "1", "2", "--widths", "8", "16", "--d", "2",
            "--steps", "6", "--n-tasks", "16", "--device", "cpu"]
    assert run(argv) == 0
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [(r["layers"], r["width"]) for r in rows] == [("1", "8"), ("1", "16"), ("2", "8"), ("2", "16")]
    names = {p.name for p in reference_predictors()}
    for r in rows:
        assert r["closest"] in names and r["steps"] == "6"
        spds = {k[4:]: float(v) for k, v in r.items() if k.startswith("spd/")}
        assert set(spds) == names and min(spds, key=spds.get) == r["closest"]
    assert (tmp_path / "sweep.png").stat().st_size > 0 and (tmp_path / "sweep_lines.png").stat().st_size > 0 and "| layers |" in (tmp_path / "sweep.md").read_text()
    stamp = (tmp_path / "cells" / "L2_W16" / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    assert run(argv) == 0  # resumed: every cell skipped, nothing retrained
    assert capsys.readouterr().out.count("already done, skipped") == 4
    assert (tmp_path / "cells" / "L2_W16" / "result.json").stat().st_mtime_ns == stamp


def test_sweep_rejects_width_not_divisible_by_heads(tmp_path):
    with pytest.raises(OutOfRangeError, match="n_heads"):
        run_sweep(tmp_path, [1], [6], d=2, n_heads=4, steps=2, n_tasks=4)


def test_reevaluate_adds_predictors_without_retraining(tmp_path):
    """`sweep --reevaluate` re-measures saved cells against a new predictor list: the weights and
    training fields stay, the SPD columns follow the new list, and the numbers of a predictor in
    both lists are unchanged (same held-out tasks)."""
    import json

    from iclconstruct.errors import OutOfRangeError as OOR

    base = ["sweep", "--out", str(tmp_path), "--layers", "1", "--widths", "8", "--d", "2", "--steps", "4",
            "--n-tasks", "16", "--device", "cpu"]
    assert run(base) == 0
    cell = tmp_path / "cells" / "L1_W8"
    before = json.loads((cell / "result.json").read_text())
    weights = (cell / "model.safetensors").read_bytes()
    assert run(base + ["--reevaluate", "--gd-lrs", "0.05", "0.01", "--lams", "0.1"]) == 0
    after = json.loads((cell / "result.json").read_text())
    assert (cell / "model.safetensors").read_bytes() == weights
    assert {k for k in after if k.startswith("spd/")} == {"spd/GD(lr=0.05)", "spd/GD(lr=0.01)", "spd/Ridge(0.1)",
                                                          "spd/OLS"}
    for k in ("spd/GD(lr=0.05)", "spd/Ridge(0.1)", "spd/OLS", "err_per_d", "train_seconds", "params"):
        assert after[k] == before[k]
    spds = {k[4:]: v for k, v in after.items() if k.startswith("spd/")}
    assert after["closest"] == min(spds, key=spds.get)
    assert "GD(lr=0.01)" in (tmp_path / "sweep.md").read_text()
    with pytest.raises(OOR, match="run the sweep first"):
        from iclconstruct.icl.sweep import reevaluate_sweep
        reevaluate_sweep(tmp_path / "empty")
