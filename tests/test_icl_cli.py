"""CLI jobs write their figures and tables (tiny settings)."""

import pytest
import torch

from iclconstruct import icl
from clitools import run

torch.set_num_threads(1)




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    assert run(["train", "--preset", "tiny", "--steps", "20", "--out", str(out), "--no-progress"]) == 0
    return out


def test_train_writes_files(trained, capsys):
    for f in ("model.safetensors", "config.json", "log.csv", "optimizer.safetensors", "loss.png"):
        assert (trained / f).is_file(), f
    assert icl.read_config(trained)["step"] == 20


def test_compare_writes_files(trained, tmp_path, capsys):
    assert run(["compare", "--model", str(trained), "--out", str(tmp_path), "--n-tasks", "40", "--n-probe", "4",
                "--mspd", f"0:{trained}", f"1/4:{trained}", "--lams", "0", "1/4"]) == 0
    for f in ("compare.csv", "compare.md", "error_vs_examples.png", "spd_vs_examples.png", "mspd.csv", "mspd.md",
              "mspd_heatmap.png"):
        assert (tmp_path / f).is_file(), f
    out = capsys.readouterr().out
    assert "closest predictor" in out and "wrote" in out


def test_probe_writes_files(trained, tmp_path, capsys):
    assert run(["probe", "--model", str(trained), "--out", str(tmp_path), "--n-tasks", "40", "--steps", "5",
                "--control"]) == 0
    for f in ("probes.csv", "probes.md", "probes.png", "probe_alpha.png"):
        assert (tmp_path / f).is_file(), f
    assert "control" in (tmp_path / "probes.csv").read_text()


def test_bad_model_name(tmp_path):
    from iclconstruct.errors import CheckpointError

    with pytest.raises(CheckpointError, match="neither"):
        run(["compare", "--model", "no-such-model", "--out", str(tmp_path)])


def test_circuit_spec_needs_d_and_module(tmp_path):
    from iclconstruct.errors import CheckpointError
    from iclconstruct.icl.cli import resolve_learner

    with pytest.raises(CheckpointError, match="circuit"):
        resolve_learner("circuit:sgd", None)
