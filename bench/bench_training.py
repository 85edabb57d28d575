"""Training throughput (steps/s) of each preset, against a minimal GPT-2-style loop of the same size.

For each preset the real training loop (:func:`iclconstruct.icl.train`: data sampled on the
device every step, per-step re-seeding, LR schedule, grad clipping, logging) runs at the
preset's full size (final d and n, no curriculum: the slowest phase). In the same process and
with the same threads, a *minimal* loop trains a bare nanoGPT-style model of identical shape
(same widths, layers, heads, tokens, batch, AdamW) on one pre-built batch, with nothing else
in the loop. ``ratio = ours / minimal`` (1.0 = no overhead beyond the model itself). The two
are timed in alternating rounds and the median per round is reported, so contention from
other processes hits both alike.

    PYTHONPATH=src python bench/bench_training.py --threads 1 --steps 100
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from iclconstruct import icl


class MinimalGPT(nn.Module):
    """The smallest GPT-2-style regressor with the preset's shape (pre-LN, GeLU MLP ×4, causal SDPA)."""

    def __init__(self, d_in: int, width: int, layers: int, heads: int, T: int):
        super().__init__()
        self.heads = heads
        self.inp = nn.Linear(d_in, width)
        self.pos = nn.Parameter(torch.zeros(T, width))
        self.ln1 = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.qkv = nn.ModuleList(nn.Linear(width, 3 * width) for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
                                 for _ in range(layers))
        self.lnf = nn.LayerNorm(width)
        self.out = nn.Linear(width, 1)

    def forward(self, x):
        B, T, _ = x.shape
        h = self.inp(x) + self.pos[:T]
        for ln1, qkv, proj, ln2, mlp in zip(self.ln1, self.qkv, self.proj, self.ln2, self.mlp):
            q, k, v = qkv(ln1(h)).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = h + proj(a.transpose(1, 2).reshape(B, T, -1))
            h = h + mlp(ln2(h))
        return self.out(self.lnf(h))[..., 0]


def _minimal_round(net, opt, tok, y, steps):
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = ((net(tok)[:, 0::2] - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def bench(name: str, steps: int, rounds: int = 3, warmup: int = 10) -> dict:
    p = icl.preset(name)
    m, t = p["model"], p["train"]
    model = icl.ICLTransformer(**m, seed=0)
    n_params = sum(q.numel() for q in model.parameters())
    kw = dict(batch_size=t["batch_size"], lr=t["lr"], progress=False, device="cpu", log_every=10**9)
    icl.train(model, warmup, **kw)
    T = 2 * m["max_points"] - 1
    net = MinimalGPT(m["d"] + 1, m["width"], m["n_layers"], m["n_heads"], T)
    assert sum(q.numel() for q in net.parameters()) == n_params, "the minimal model must have the same size"
    opt = torch.optim.AdamW(net.parameters(), lr=t["lr"], weight_decay=0.0)
    tok = torch.randn(t["batch_size"], T, m["d"] + 1)
    y = torch.randn(t["batch_size"], m["max_points"])
    _minimal_round(net, opt, tok, y, warmup)
    ours, mini = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        icl.train(model, steps, **kw)
        ours.append(steps / (time.perf_counter() - t0))
        mini.append(steps / _minimal_round(net, opt, tok, y, steps))
    o, n = statistics.median(ours), statistics.median(mini)
    return dict(preset=name, params=n_params, tokens=T, batch=t["batch_size"], steps_per_s=o, minimal_steps_per_s=n,
                ratio=o / n, full_run_min=t["steps"] / o / 60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    ap.add_argument("--presets", nargs="+", default=list(icl.PRESETS))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads={a.threads}, "
          f"{a.rounds} rounds × {a.steps} timed steps at full d and n")
    print("| preset | params | tokens | batch | ours steps/s | minimal GPT-2 loop steps/s | ratio | preset run (min) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.presets:
        r = bench(name, a.steps, a.rounds)
        print(f"| {r['preset']} | {r['params']:,} | {r['tokens']} | {r['batch']} | {r['steps_per_s']:.1f} | "
              f"{r['minimal_steps_per_s']:.1f} | {r['ratio']:.2f} | {r['full_run_min']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
