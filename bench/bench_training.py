"""Measure training throughput (steps/s) of each preset on this machine.

Runs the real training loop (:func:`iclconstruct.icl.train`) at the preset's full size
(final d and n, no curriculum, i.e. the slowest phase) for ``--steps`` steps after a short
warm-up, with ``--threads`` torch threads, and prints a Markdown table.

    PYTHONPATH=src python bench/bench_training.py --threads 1 --steps 100
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from iclconstruct import icl


def bench(name: str, steps: int, warmup: int = 10) -> dict:
    p = icl.preset(name)
    t = dict(p["train"], curriculum=None)
    torch.manual_seed(0)
    model = icl.ICLTransformer(**p["model"])
    n_params = sum(q.numel() for q in model.parameters())
    icl.train(model, warmup, batch_size=t["batch_size"], lr=t["lr"], progress=False, device="cpu")
    t0 = time.perf_counter()
    icl.train(model, steps, batch_size=t["batch_size"], lr=t["lr"], progress=False, device="cpu", log_every=10**9)
    dt = time.perf_counter() - t0
    return dict(preset=name, params=n_params, tokens=2 * p["model"]["max_points"] - 1, batch=t["batch_size"],
                steps_per_s=steps / dt, s_per_step=dt / steps, full_run_min=p["train"]["steps"] * dt / steps / 60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--presets", nargs="+", default=list(icl.PRESETS))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads={a.threads}, "
          f"{a.steps} timed steps at full d and n")
    print("| preset | params | tokens | batch | steps/s | s/step | preset run (upper bound, min) |")
    print("|---|---|---|---|---|---|---|")
    for name in a.presets:
        r = bench(name, a.steps)
        print(f"| {r['preset']} | {r['params']:,} | {r['tokens']} | {r['batch']} | {r['steps_per_s']:.1f} | "
              f"{r['s_per_step']:.3f} | {r['full_run_min']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
