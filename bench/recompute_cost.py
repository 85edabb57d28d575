"""Cost of the a-posteriori check by recomputation against the forward pass it checks.

    python bench/recompute_cost.py            # prints the table
    python bench/recompute_cost.py --docs     # and writes it into docs/certificate.md

Per row, in one run (medians of 3, 1 CPU thread): the model's full forward pass with the
range checks on and the a-posteriori check off (``model._run`` + readout), the check alone
(``model._verification``: the float64 interpreter with its running error bound, on the host),
and the dependency-pruned pass (``predict_prefixes``, check off) for the sequential circuits.
"""
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import iclconstruct as ic
from iclconstruct.tokens import encode

ROOT = Path(__file__).resolve().parents[1]
C = ic.circuits
F32 = dict(dtype=torch.float32)


def cases():
    return [
        ("sgd", 8, 64, lambda: C.sgd(8, 0.03, max_len=129, **F32)),
        ("sgd", 8, 256, lambda: C.sgd(8, 0.03, max_len=513, **F32)),
        ("batch_gd steps=3", 8, 64, lambda: C.batch_gd(8, 0.005, steps=3, **F32)),
        ("gd_plus_plus steps=2", 8, 64, lambda: C.gd_plus_plus(8, 0.005, 0.005, steps=2, **F32)),
        ("preconditioned_gd steps=3", 8, 64, lambda: C.preconditioned_gd(8, 0.005, 3, **F32)),
        ("newton steps=8", 8, 64, lambda: C.newton(8, 8, m_bound=20.0, **F32)),
        ("batch_gd steps=3, float64", 8, 64, lambda: C.batch_gd(8, 0.005, steps=3)),
        ("newton steps=8, float64", 8, 64, lambda: C.newton(8, 8, m_bound=20.0)),
    ]


def med(f, k=3):
    ts = []
    for _ in range(k):
        t0 = time.perf_counter()
        r = f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), r


def row(name, d, n, make):
    m = make()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1, n, d)) * 0.7
    y = X @ rng.standard_normal(d) / np.sqrt(d)
    xq = rng.standard_normal((1, d))
    tok = encode(X, y, xq)
    t, _ = m._prepare(tok)

    def fwd():
        with torch.no_grad():
            h = m._run(t, True)
            return h, m._readout(h)

    t_fwd, (h, out) = med(fwd)
    t_chk, v = med(lambda: m._verification(tok, h, out))
    t_pre = None
    if m.layers_per_example():
        t_pre, _ = med(lambda: m.predict_prefixes(X, y, check=False))
    return {"circuit": name, "d": d, "n": n, "forward": t_fwd, "check": t_chk, "pruned": t_pre,
            "bound": float(v.bounds.max())}


def table(rows) -> str:
    out = [f"_Measured {time.strftime('%Y-%m-%d')} by `python bench/recompute_cost.py` on x86_64, 1 CPU thread, "
           f"torch {torch.__version__}; float32 models unless marked, one Gaussian context; medians of 3._", "",
           "| circuit | d | n | forward (s) | check (s) | check / forward | check / pruned pass | largest bound |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pre = f"{r['check'] / r['pruned']:.0%}" if r["pruned"] else "—"
        out.append(f"| {r['circuit']} | {r['d']} | {r['n']} | {r['forward']:.3g} | {r['check']:.3g} | "
                   f"{r['check'] / r['forward']:.1%} | {pre} | {r['bound']:.1e} |")
    return "\n".join(out)


def main():
    torch.set_num_threads(1)
    rows = []
    for c in cases():
        rows.append(row(*c))
        print(rows[-1], flush=True)
    tab = table(rows)
    print(tab)
    if "--docs" in sys.argv:
        doc = ROOT / "docs" / "certificate.md"
        text = doc.read_text()
        new = f"<!-- bench:recompute-cost -->\n{tab}\n<!-- /bench:recompute-cost -->"
        text = re.sub(r"<!-- bench:recompute-cost -->.*?<!-- /bench:recompute-cost -->", lambda _: new, text, flags=re.S)
        doc.write_text(text)


if __name__ == "__main__":
    main()
