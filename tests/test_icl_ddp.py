"""The training job runs unchanged under torchrun (2 CPU processes, Gloo backend)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iclconstruct import icl

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_two_ranks(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "iclconstruct.icl.cli", "train", "--preset", "tiny", "--steps", "6", "--out", str(tmp_path),
           "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = icl.read_config(tmp_path)
    assert cfg["train"]["world_size"] == 2 and cfg["step"] == 6
    icl.load(tmp_path)
    assert proc.stdout.count("trained 6 steps") == 1  # only rank 0 reports
