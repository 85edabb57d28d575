"""Anchors chosen by the certificate against the fixed default, per circuit (float64).

    python bench/auto_constants.py            # measure, append rows, rewrite the docs table
    python bench/auto_constants.py --docs     # only rewrite the table from the rows on file

For every circuit: the anchor ``K = M`` that ``compile`` chooses (``model.constant_search``) and the
fixed default ``Constants.float64()`` (``K = M = 1e8``); for each, the certificate at 1 and 4 examples,
the largest error relative to ``1 + |exact|`` on Gaussian tasks (``n = 32``, 16 tasks, every prefix)
and the worst absolute error the adversarial search finds at 4 examples. Rows go to
``bench/results/auto_constants.jsonl`` as they are measured; the table between the
``bench:auto-constants`` markers of ``docs/certificate.md`` is written from the latest rows.
"""
from __future__ import annotations

import datetime
import json
import platform
import re
import sys
from pathlib import Path

import numpy as np
import torch

import iclconstruct as ic
from iclconstruct.lang.interpreter import interpret
from iclconstruct.numerics.adversary import worst_error
from iclconstruct.numerics.constants import Constants

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "auto_constants.jsonl"
DOC = ROOT / "docs" / "certificate.md"

CASES = [
    ("sgd d=4 lr=0.03", 4, lambda C: ic.circuits.sgd(4, 0.03, max_len=65, constants=C)),
    ("sgd d=8 lr=0.03", 8, lambda C: ic.circuits.sgd(8, 0.03, max_len=65, constants=C)),
    ("ridge d=4 lam=1", 4, lambda C: ic.circuits.ridge(4, 1.0, max_len=65, constants=C)),
    ("ridge d=8 lam=0.1", 8, lambda C: ic.circuits.ridge(8, 0.1, max_len=65, constants=C)),
    ("ridge d=16 lam=0.1", 16, lambda C: ic.circuits.ridge(16, 0.1, max_len=65, constants=C)),
    ("batch_gd d=2 lr=0.05 steps=2", 2, lambda C: ic.circuits.batch_gd(2, 0.05, 2, max_n=32, constants=C)),
    ("newton d=2 steps=3", 2, lambda C: ic.circuits.newton(2, 3, max_n=32, constants=C)),
    ("gd_plus_plus d=2 lr=0.05 gamma=0.1", 2, lambda C: ic.circuits.gd_plus_plus(2, 0.05, 0.1, max_n=32, constants=C)),
    ("preconditioned_gd d=2 lr=0.05", 2, lambda C: ic.circuits.preconditioned_gd(2, 0.05, max_n=32, constants=C)),
]


def typical_error(m, d: int, n: int = 32, tasks: int = 16, seed: int = 0) -> float:
    """max |model − exact| / (1 + |exact|) over Gaussian tasks (anisotropic scales, rows cut to ‖x‖ ≤ 5), every x̃ column."""
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.3, 1.5, size=(tasks, 1, d))
    X = rng.standard_normal((tasks, n, d)) * scales
    norm = np.linalg.norm(X, axis=-1, keepdims=True)
    X = X * np.minimum(1.0, 5.0 / np.maximum(norm, 1e-300))  # within SGD's step guard (2·0.03·‖x‖² ≤ 2)
    w = rng.standard_normal((tasks, d))
    y = np.einsum("bnd,bd->bn", X, w)
    tok = ic.tokens.encode(X, y, rng.standard_normal((tasks, d)))
    with torch.no_grad():
        out = m(torch.as_tensor(tok), check=False).double().numpy()
    exact = interpret(m.program, tok, check=False, max_len=m.max_len).output
    return float(np.max(np.abs(out - exact) / (1 + np.abs(exact))))


def _fmt(v: float) -> str:
    return "inf" if not np.isfinite(v) else f"{v:.2g}"


def table() -> list:
    latest = {}
    for line in OUT.open():
        r = json.loads(line)
        latest[(r["circuit"], r["constants"])] = r
    lines = ["| circuit | constants | K = M | certificate n=1 | certificate n=4 | typical error | adversarial worst n=4 |",
             "|---|---|---|---|---|---|---|"]
    for name, _, _ in CASES:
        for which in ("chosen", "default"):
            r = latest.get((name, which))
            if r is not None:
                lines.append(f"| {name} | {which} | {r['K']:.0e} | {_fmt(r['cert1'])} | {_fmt(r['cert4'])} | "
                             f"{_fmt(r['typical'])} | {_fmt(r['worst4'])} |")
    return lines


def write_docs() -> None:
    stamp = (f"_`python bench/auto_constants.py` on {platform.machine()}, torch {torch.__version__}, "
             f"{datetime.date.today()}: typical error = max |model − exact|/(1 + |exact|) over 16 Gaussian tasks (rows cut to ‖x‖ ≤ 5), "
             "n = 32, every prefix; adversarial = `worst_error(m, 4, corners=64, rounds=4)`._")
    text = DOC.read_text()
    block = "\n".join([stamp, ""] + table())
    new = re.sub(r"(<!-- bench:auto-constants -->\n).*?(<!-- /bench:auto-constants -->)",
                 lambda mt: mt.group(1) + block + "\n" + mt.group(2), text, flags=re.S)
    DOC.write_text(new)


def main() -> None:
    torch.set_num_threads(1)
    if "--docs" not in sys.argv:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        for name, d, make in CASES:
            for which, C in (("chosen", None), ("default", Constants.float64())):
                m = make(C)
                row = {"circuit": name, "constants": which, "K": m.constants.ln_anchor,
                       "cert1": m.certify(1).max_abs_error, "cert4": m.certify(4).max_abs_error,
                       "typical": typical_error(m, d), "worst4": worst_error(m, 4, corners=64, rounds=4).error,
                       "date": str(datetime.date.today())}
                with OUT.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(row, flush=True)
    write_docs()


if __name__ == "__main__":
    main()
