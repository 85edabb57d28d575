"""Cost of the ridge circuit's a-posteriori check, as a ratio to the forward pass it checks.

    python bench/aposteriori_cost.py            # about five minutes on 1 CPU thread

For each case, in the same process and on the same inputs (Gaussian ``X``, planted ``w``):

* ``forward``: ``model(tokens, check=False)`` (full pass, no run-time checks);
* ``checks``: ``model(tokens)`` (range checks and the a-posteriori check);
* ``apost``: the a-posteriori check alone (``model._verification`` on the final residual
  stream: host copy, prefix sums, Cholesky, one solve);
* ``pruned``: ``model.predict_prefixes(X, y, check=False)`` (the dependency-pruned pass),
  which is much cheaper than the full pass, so the check weighs more there.

Median of ``REPEATS`` timings each. Writes the table between the ``bench:apost-cost``
markers of ``docs/certificate.md`` and the rows to ``bench/results/aposteriori_cost.jsonl``.
"""
from __future__ import annotations

import datetime
import json
import platform
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import iclconstruct as ic
from iclconstruct.tokens import encode

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "aposteriori_cost.jsonl"
REPEATS = 3
CASES = [  # (d, n, batch, dtype)
    (2, 16, 8, torch.float64),
    (4, 32, 8, torch.float32),
    (8, 32, 8, torch.float64),
    (8, 64, 2, torch.float64),
    (16, 32, 1, torch.float64),
]


def timed(fn) -> float:
    ts = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    torch.set_num_threads(1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for d, n, B, dt in CASES:
        m = ic.circuits.ridge(d, 1.0, dtype=dt, max_len=2 * n + 1)
        X = rng.standard_normal((B, n, d))
        y = np.einsum("bnd,bd->bn", X, rng.standard_normal((B, d)))
        tok = encode(X, y, rng.standard_normal((B, d)))
        t = torch.as_tensor(tok, dtype=dt)
        with torch.no_grad():
            h = m._run(t, False)
            out = m._readout(h)
        fwd = timed(lambda: m(tok, check=False))
        chk = timed(lambda: m(tok))
        apost = timed(lambda: m._verification(tok, h, out))
        pruned = timed(lambda: m.predict_prefixes(X, y, check=False))
        row = {"d": d, "n": n, "batch": B, "dtype": str(dt).replace("torch.", ""), "forward_s": fwd,
               "checked_s": chk, "apost_s": apost, "pruned_s": pruned, "apost_over_forward": apost / fwd,
               "apost_over_pruned": apost / pruned, "max_bound": float(m._verification(tok, h, out).max_bound)}
        rows.append(row)
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)
    stamp = (f"_Measured {datetime.date.today()} by `python bench/aposteriori_cost.py` on {platform.machine()}, "
             f"1 CPU thread, torch {torch.__version__}; medians of {REPEATS}._")
    lines = [stamp, "",
             "| d | n | batch | dtype | forward (s) | a-posteriori check (s) | check / forward | check / pruned pass | largest bound |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['d']} | {r['n']} | {r['batch']} | {r['dtype']} | {r['forward_s']:.3g} | {r['apost_s']:.2g} | "
                     f"{r['apost_over_forward']:.2%} | {r['apost_over_pruned']:.1%} | {r['max_bound']:.1e} |")
    doc = ROOT / "docs" / "certificate.md"
    text = doc.read_text()
    block = "<!-- bench:apost-cost -->\n" + "\n".join(lines) + "\n<!-- /bench:apost-cost -->"
    if "<!-- bench:apost-cost -->" in text:
        text = re.sub(r"<!-- bench:apost-cost -->.*<!-- /bench:apost-cost -->", lambda _: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    doc.write_text(text)


if __name__ == "__main__":
    main()
