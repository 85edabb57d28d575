"""Benchmarks of the algorithm circuits (not tests). Writes its tables into docs/algorithms.md.

    python bench/bench_circuits.py            # full run (≈10 min on 2 cores)
    python bench/bench_circuits.py --quick    # small sizes, prints only

Tables:
  (a) error vs the numpy reference as a function of d, n, dtype and the precision constants;
  (b) depth, width and parameter count vs d, next to the paper's counts;
  (c) build time, memory and forward time for a batch of tasks, as a ratio to the numpy
      solver on the same batch, measured in the same run.
"""
from __future__ import annotations

import argparse
import pathlib
import platform
import re
import time

import numpy as np
import torch

import iclconstruct as ic

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "algorithms.md"


def task(rng, B, n, d):
    X = rng.standard_normal((B, n, d))
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((B, d)))
    return X, y, rng.standard_normal((B, d))


def sgd_lr(X):
    return 0.5 / (2 * float((X * X).sum(-1).max()))


def err_sgd(d, n, B, rng, dtype=torch.float64, constants=None, lam=0.1):
    X, y, xq = task(rng, B, n, d)
    lr = sgd_lr(X)
    m = ic.circuits.sgd(d, lr, lam=lam, dtype=dtype, constants=constants, max_len=2 * n + 1)
    pred = m.predict(torch.as_tensor(X, dtype=dtype), torch.as_tensor(y, dtype=dtype), torch.as_tensor(xq, dtype=dtype))
    ref = np.einsum("bd,bd->b", xq, ic.reference.sgd(X, y, lr, lam=lam))
    return float(np.max(np.abs(pred.double().numpy() - ref) / (1 + np.abs(ref))))


def err_ridge(d, n, B, rng, dtype=torch.float64, constants=None, lam=0.1):
    X, y, xq = task(rng, B, n, d)
    m = ic.circuits.ridge(d, lam, dtype=dtype, constants=constants, max_len=2 * n + 1)
    pred = m.predict(torch.as_tensor(X, dtype=dtype), torch.as_tensor(y, dtype=dtype), torch.as_tensor(xq, dtype=dtype))
    ref = np.einsum("bd,bd->b", xq, ic.reference.ridge(X, y, lam))
    return float(np.max(np.abs(pred.double().numpy() - ref) / (1 + np.abs(ref))))


def err_or_refusal(fn, *args, **kw) -> str:
    """The measured error, or the library's refusal (a construction that cannot serve these
    inputs to its stated accuracy raises instead of answering)."""
    try:
        return f"{fn(*args, **kw):.1e}"
    except ic.errors.ICLConstructError as exc:
        return f"refused ({type(exc).__name__})"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def section_errors(quick):
    rng = np.random.default_rng(0)
    B = 8
    rows = []
    sizes = [(4, 8), (8, 16)] if quick else [(4, 16), (16, 32), (32, 64)]
    for d, n in sizes:
        rows.append(("sgd", d, n, "float64", "default (anchors chosen)", err_or_refusal(err_sgd, d, n, B, rng)))
    for d, n in ([(4, 8)] if quick else [(4, 16), (8, 16), (16, 32)]):
        rows.append(("ridge (λ=0.1)", d, n, "float64", "default (anchors chosen)", err_or_refusal(err_ridge, d, n, B, rng)))
    for d, n in [(4, 8)] if quick else [(4, 8), (8, 16)]:
        rows.append(("sgd", d, n, "float32", "Constants.float32()", err_or_refusal(err_sgd, d, n, B, rng, dtype=torch.float32)))
        rows.append(("ridge (λ=0.1)", d, n, "float32", "Constants.float32()",
                     err_or_refusal(err_ridge, d, n, B, rng, dtype=torch.float32)))
        rows.append(("ridge (λ=1)", d, n, "float32", "Constants.float32()",
                     err_or_refusal(err_ridge, d, n, B, rng, dtype=torch.float32, lam=1.0)))
        rows.append(("ridge (λ=10)", d, n, "float32", "Constants.float32()",
                     err_or_refusal(err_ridge, d, n, B, rng, dtype=torch.float32, lam=10.0)))
    # bfloat16: no admissible constants (the best product errs by ≈0.14, above 1e-3): refused at compile time
    rows.append(("sgd", 4, 8, "bfloat16", "—", err_or_refusal(err_sgd, 4, 8, B, rng, dtype=torch.bfloat16)))
    rows.append(("ridge (λ=1)", 4, 8, "bfloat16", "—", err_or_refusal(err_ridge, 4, 8, B, rng, dtype=torch.bfloat16, lam=1.0)))
    t1 = table(["circuit", "d", "n", "dtype", "constants", "max err/(1+|ref|)"], rows)
    # precision constants (float64, d = 8, n = 16, ridge λ = 0.1 and sgd)
    rows = []
    d, n = (4, 8) if quick else (8, 16)
    for N in ([1e4, 1e5] if quick else [1e3, 1e4, 1e5, 1e6]):
        c = ic.Constants(product_scale=N)
        rows.append((f"product_scale N = {N:g}", err_or_refusal(err_sgd, d, n, B, rng, constants=c),
                     err_or_refusal(err_ridge, d, n, B, rng, constants=c)))
    for K in ([1e6, 1e8] if quick else [1e6, 1e7, 1e8, 1e9]):
        c = ic.Constants(ln_anchor=K, div_scale=K)
        rows.append((f"ln_anchor K = div_scale M = {K:g}", err_or_refusal(err_sgd, d, n, B, rng, constants=c),
                     err_or_refusal(err_ridge, d, n, B, rng, constants=c)))
    t2 = table(["constants (others default)", f"sgd d={d} n={n}", f"ridge d={d} n={n}"], rows)
    return t1 + "\n\nError against the precision constants (float64, max err/(1+|ref|) over 8 tasks):\n\n" + t2


def dense_params(m) -> int:
    """Parameters of the dense model (what the paper counts), also for a model built sparse."""
    from iclconstruct.compiler.sparse_build import dense_param_count

    c = m.cfg
    return dense_param_count(c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_mlp, c.d_vocab, c.max_len)


def section_costs(quick):
    rows = []
    for d in ([2, 4] if quick else [1, 2, 4, 8, 16, 32]):
        s = ic.circuits.sgd(d, 0.01, lam=0.1)
        r = ic.circuits.ridge(d, 0.1)
        su = len(s.layout.user_rows()) - 3
        ru = len(r.layout.user_rows()) - 3
        rows.append((d, f"{s.layers_per_example()} (paper ≈9)", f"{su} / {s.d_model} (paper ≈{4 + 4 * d})",
                     f"{dense_params(s):,}",
                     f"{r.layers_per_example()} (paper ≈14)", f"{ru} / {r.d_model} (paper ≈{3 * d * d + 5 * d + 3})",
                     f"{dense_params(r):,}"))
    return table(["d", "sgd layers/example", "sgd rows: algorithm / total", "sgd params (dense)",
                  "ridge layers/example", "ridge rows: algorithm / total", "ridge params (dense)"], rows)


def costs_of(name, quick):
    rows = []
    for d in ([2, 4] if quick else [1, 2, 4, 8, 16, 32]):
        if name == "sgd":
            m0, m = ic.circuits.sgd(d, 0.01), ic.circuits.sgd(d, 0.01, lam=0.1)
            paper = (9, 4 + 4 * d)
        else:
            m0 = m = ic.circuits.ridge(d, 0.1)
            paper = (14, 3 * d * d + 5 * d + 3)
        rows.append((d, m.layers_per_example(), paper[0], f"{len(m0.layout.user_rows()) - 3}"
                     + ("" if m0 is m else f" (lam=0) / {len(m.layout.user_rows()) - 3} (lam>0)"),
                     paper[1], m.d_model, m.d_mlp, f"{m.n_heads} × {m.d_head}", f"{dense_params(m):,}"))
    return table(["d", "layers / example", "paper", "algorithm rows", "paper rows", "width D", "MLP width",
                  "heads × d_head", "parameters (dense)"], rows)


def section_speed(quick):
    rng = np.random.default_rng(1)
    B = 16
    rows = []
    cases = [("sgd", d, min(2 * d, 64)) for d in ([4, 8] if quick else [4, 16, 32, 64])]
    cases += [("ridge", d, 16 if d <= 16 else 8) for d in ([4] if quick else [4, 8, 16, 32])]
    for name, d, n in cases:
        X, y, xq = task(rng, B, n, d)
        t0 = time.perf_counter()
        m = ic.circuits.sgd(d, sgd_lr(X), max_len=2 * n + 1) if name == "sgd" else ic.circuits.ridge(d, 0.1, max_len=2 * n + 1)
        build = time.perf_counter() - t0
        m.predict(X[:1], y[:1], xq[:1])  # warm-up
        t0 = time.perf_counter()
        m.predict(X, y, xq)
        fwd = time.perf_counter() - t0
        solve = ic.reference.sgd if name == "sgd" else ic.reference.ridge
        arg = sgd_lr(X) if name == "sgd" else 0.1
        reps = 20
        t0 = time.perf_counter()
        for _ in range(reps):
            np.einsum("bd,bd->b", xq, solve(X, y, arg))
        base = (time.perf_counter() - t0) / reps
        item = m.W_E.element_size()
        mb = m.n_params() * item / 2**20
        T = 2 * n + 1  # one layer's live activations: residual, MLP hidden units, attention scores
        act = B * T * (2 * m.d_model + 2 * m.d_mlp + m.n_heads * (T + 3 * m.d_head)) * item / 2**20
        rows.append((name, d, n, B, f"{build * 1e3:.0f} ms", f"{mb:.1f} MB", f"{act:.1f} MB", f"{fwd * 1e3:.0f} ms",
                     f"{base * 1e3:.2f} ms", f"{fwd / base:,.0f}×"))
    return table(["circuit", "d", "n", "batch", "build", "parameters", "activations / layer", "forward (batch)",
                  "numpy solver (batch)", "forward / numpy"], rows)


DOCS = {"costs_sgd": DOC.parent / "circuit_sgd.md", "costs_ridge": DOC.parent / "circuit_ridge.md"}


def write(doc_sections):
    for key, body in doc_sections.items():
        path = DOCS.get(key, DOC)
        text = path.read_text()
        pat = re.compile(rf"(<!-- bench:{key} -->\n).*?(\n<!-- /bench:{key} -->)", re.S)
        if not pat.search(text):
            raise SystemExit(f"marker bench:{key} missing in {path}")
        path.write_text(pat.sub(lambda m: m.group(1) + body + m.group(2), text))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=["costs", "costs_sgd", "costs_ridge", "errors", "speed"], default=None,
                    help="run (and write) one table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stamp = (f"_Measured {time.strftime('%Y-%m-%d')} by `python bench/bench_circuits.py` on "
             f"{platform.machine()}, {args.threads} torch thread(s), torch {torch.__version__}._\n\n")
    secs = {}
    for key, fn in (("costs", section_costs), ("costs_sgd", lambda q: costs_of("sgd", q)),
                    ("costs_ridge", lambda q: costs_of("ridge", q)), ("errors", section_errors),
                    ("speed", section_speed)):
        if args.only and key != args.only:
            continue
        t0 = time.perf_counter()
        secs[key] = stamp + fn(args.quick)
        print(secs[key], f"\n({key}: {time.perf_counter() - t0:.0f} s)\n", flush=True)
    if not args.quick:
        write(secs)
        print(f"tables written to {DOC}")


if __name__ == "__main__":
    main()
