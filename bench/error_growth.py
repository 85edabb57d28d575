"""Error growth with the context length n (up to 512) for every circuit, with the certificate.

    nohup nice -n 10 python bench/error_growth.py &

Appends one JSON line per (circuit, dtype, n) to ``bench/results/error_growth.jsonl`` as it
goes (resumable: rows already there are skipped) and rewrites the ``bench:growth`` table of
``docs/algorithms.md`` from every row measured so far.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

import iclconstruct as ic

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "error_growth.jsonl"
NS = (8, 32, 128, 512)


def _circuits():
    """(name, make(dtype, n) -> model, reference(X, y) -> w) for every circuit of the library."""
    R, C = ic.reference, ic.circuits
    yield ("sgd d=4 lr=0.02 lam=0.1", lambda dt, n: C.sgd(4, 0.02, lam=0.1, dtype=dt, max_len=2 * n + 1),
           lambda X, y: R.sgd(X, y, 0.02, lam=0.1))
    yield ("ridge d=4 lam=1", lambda dt, n: C.ridge(4, 1.0, dtype=dt, max_len=2 * n + 1), lambda X, y: R.ridge(X, y, 1.0))
    yield ("batch_gd d=4 lr=0.001 steps=3", lambda dt, n: C.batch_gd(4, 0.001, steps=3, max_n=n, dtype=dt),
           lambda X, y: R.batch_gd(X, y, 0.001, steps=3))
    yield ("newton d=4 steps=8", lambda dt, n: C.newton(4, 8, m_bound=20.0, max_n=n, dtype=dt),
           lambda X, y: R.newton(X, y, 8, alpha="trace"))


def _measure(m, ref_w, n, dt, seed=0, B=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, n, m.d)) * rng.uniform(0.3, 1.5, size=m.d)  # anisotropic
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((B, m.d)))
    xq = rng.standard_normal((B, m.d))
    ref = np.array([xq[b] @ ref_w(X[b], y[b]) for b in range(B)])
    out = m(torch.as_tensor(ic.tokens.encode(X, y, xq), dtype=dt))[:, -1].double().numpy()
    return float(np.max(np.abs(out - ref) / (1 + np.abs(ref))))


def main() -> None:
    torch.set_num_threads(1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if OUT.exists():
        done = {(r["circuit"], r["dtype"], r["n"]) for r in map(json.loads, OUT.read_text().splitlines())}
    for name, make, ref_w in _circuits():
        for dt in (torch.float64, torch.float32):
            dname = str(dt).replace("torch.", "")
            for n in NS:
                if (name, dname, n) in done:
                    continue
                try:
                    m = make(dt, n)
                    err = _measure(m, ref_w, n, dt)
                except ic.errors.ICLConstructError as exc:
                    err = f"refused: {type(exc).__name__}"
                    m = None
                cert = m.certify(n).max_abs_error if m is not None else float("nan")
                row = {"circuit": name, "dtype": dname, "n": n, "err": err, "certificate": cert}
                with OUT.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(row, flush=True)
                _write_table()


def _write_table() -> None:
    rows = [json.loads(l) for l in OUT.read_text().splitlines()]
    lines = ["_Measured by `python bench/error_growth.py` (4 tasks, anisotropic `x`, max error/(1 + |ref|) of "
             "the final prediction against the numpy reference; certificate: `model.certify(n).max_abs_error`, absolute)._",
             "", "| circuit | dtype | n | max err/(1+|ref|) | certificate |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["circuit"], r["dtype"], r["n"])):
        e = r["err"] if isinstance(r["err"], str) else f"{r['err']:.1e}"
        lines.append(f"| {r['circuit']} | {r['dtype']} | {r['n']} | {e} | {r['certificate']:.2g} |")
    doc = ROOT / "docs" / "algorithms.md"
    text = doc.read_text()
    block = "<!-- bench:growth -->\n" + "\n".join(lines) + "\n<!-- /bench:growth -->"
    if "<!-- bench:growth -->" in text:
        text = re.sub(r"<!-- bench:growth -->.*<!-- /bench:growth -->", block, text, flags=re.S)
    else:
        text += "\n## Error growth with the context length\n\n" + block + "\n"
    doc.write_text(text)


def recertify() -> None:
    """Recompute the certificate column of every measured row with the current analysis (the errors
    stand: the models are unchanged), then rewrite the table: ``python bench/error_growth.py --recertify``."""
    makes = {name: make for name, make, _ in _circuits()}
    rows = [json.loads(l) for l in OUT.read_text().splitlines()]
    for r in rows:
        if isinstance(r["err"], str):
            continue
        m = makes[r["circuit"]](getattr(torch, r["dtype"]), r["n"])
        r["certificate"] = m.certify(r["n"]).max_abs_error
        print(r, flush=True)
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _write_table()


if __name__ == "__main__":
    import sys

    recertify() if "--recertify" in sys.argv[1:] else main()
