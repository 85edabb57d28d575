"""compare: several learners (trained models and circuits) ranked together; ILWD for circuits;
no silent context cap."""

import numpy as np
import pytest
import torch

import iclconstruct as ic
from iclconstruct import icl
from iclconstruct.errors import CheckpointError, ContextTooLongError
from clitools import run

torch.set_num_threads(1)




@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("m")
    icl.save_checkpoint(out, icl.ICLTransformer(d=3, n_layers=1, width=16, n_heads=1, max_points=7, seed=0))
    return out


def test_ilwd_for_a_circuit_is_defined_and_exact():
    """ILWD skips n = 0 (the circuit refuses an empty context) and is ~0 to the circuit's own algorithm."""
    tasks = icl.sample_tasks(20, 5, 3, seed=0)
    circ = ic.circuits.ridge(3, 0.5)
    circ.name = "ridge circuit"
    t = icl.compare(circ, tasks, [icl.predictors.ridge(0.5), icl.predictors.ols()], n_probe=3, n_boot=20)
    il = {p: t.column(p, "ilwd_per_d") for p in t.predictors()}
    assert np.isnan(il["Ridge(0.5)"][0])  # k = 0 skipped
    assert np.all(il["Ridge(0.5)"][1:] < 1e-10)
    assert np.all(il["OLS"][1:3] > 1e-4)  # and it can tell ridge from OLS in the under-determined region
    assert t.closest(key="ilwd_per_d") == "Ridge(0.5)"


def test_cli_ranks_a_checkpoint_and_circuits_together(ckpt, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert run(["compare", "--model", str(ckpt), "circuit:ridge:0.5", "circuit:sgd:0.01", "--d", "3",
                "--n-tasks", "12", "--n-probe", "3", "--out", str(out)]) == 0
    rank = (out / "ranking.md").read_text()
    header = [ln for ln in rank.splitlines() if ln.startswith("| predictor")][0]
    assert header == f"| predictor | {ckpt.name} | circuit:ridge:0.5 | circuit:sgd:0.01 |"
    rows = {ln.split(" | ")[0][2:]: ln for ln in rank.splitlines() if ln.startswith("| ") and "predictor" not in ln}
    # every learner appears as a row of the others' columns; each circuit is closest to its own algorithm
    assert {"circuit:ridge:0.5", "circuit:sgd:0.01", ckpt.name} <= set(rows)
    assert "**" in rows["Ridge(0.5)"].split(" | ")[2] and "**" in rows["SGD(lr=0.01)"].split(" | ")[3]
    assert "ILWD/d" in rank
    csv_text = (out / "compare.csv").read_text()
    assert csv_text.count("learner,predictor") == 1 and "circuit:sgd:0.01,Ridge(0.5)" in csv_text
    for f in ("spd_vs_examples_circuit_ridge_0.5.png", f"compare_{ckpt.name}.md"):
        assert (out / f).stat().st_size > 0
    assert "closest predictor to circuit:ridge:0.5" in capsys.readouterr().out


def test_lengths_beyond_a_models_context_are_an_error(ckpt, tmp_path):
    with pytest.raises(ContextTooLongError, match="--n-points 9"):
        run(["compare", "--model", str(ckpt), "--n-points", "9", "--n-tasks", "4", "--out", str(tmp_path)])
    with pytest.raises(ContextTooLongError, match="--n-points"):
        run(["probe", "--model", str(ckpt), "--n-points", "9", "--n-tasks", "4", "--out", str(tmp_path)])


def test_unknown_circuit_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no circuit named 'nosuch'"):
        run(["compare", "--model", "circuit:nosuch:1", "--d", "3", "--out", str(tmp_path)])


def test_help_names_real_models(capsys):
    with pytest.raises(SystemExit):
        run(["compare", "--help"])
    text = capsys.readouterr().out
    for name in icl.list_pretrained():
        assert name in text
    assert "lite-d8-s0.25" not in text
