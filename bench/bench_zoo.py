"""Cost tables of the circuit zoo (docs/zoo.md and the circuit pages): layers, width, parameters
and the measured float64 error against the reference, for d ∈ {2, 8, 16} and n ∈ {8, 32}.

    python bench/bench_zoo.py                     # appends to bench/zoo_results.jsonl, resumable
    python bench/bench_zoo.py --table             # print the markdown tables

Error = max over 4 tasks (x, w ~ N(0, I), y = wᵀx) and every prefix of |model − ref| / (1 + |ref|).
Newton and GD++ form d³ products per layer; at d = 16 their compiled weights take several GB in
float64, so only the interpreter is measured there (marked in the table).
"""
import argparse
import json
import os
import time

import numpy as np
import torch

import iclconstruct as ic

C, R = ic.circuits, ic.reference
OUT = os.path.join(os.path.dirname(__file__), "zoo_results.jsonl")


def zoo(d):
    P = np.diag(np.linspace(0.5, 1.5, d))
    return {
        "batch_gd": (lambda: C.batch_gd_algorithm(d, 0.005, steps=3), lambda X, y: R.batch_gd(X, y, 0.005, 3)),
        "newton": (lambda: C.newton_algorithm(d, 8, m_bound=20.0), lambda X, y: R.newton(X, y, 8, alpha="trace")),
        "gd_plus_plus": (lambda: C.gd_plus_plus_algorithm(d, 0.005, 0.005, steps=2),
                         lambda X, y: R.gd_plus_plus(X, y, 0.005, 0.005, 2)),
        "preconditioned_gd": (lambda: C.preconditioned_gd_algorithm(d, 0.005, 3, P=P),
                              lambda X, y: R.preconditioned_gd(X, y, 0.005, 3, P=P)),
    }


def measure(name, d, n, compiled=True):
    make, ref = zoo(d)[name]
    alg = make()
    rng = np.random.default_rng(0)
    errs_i, errs_m = [], []
    model = alg.compile() if compiled else None
    for _ in range(4):
        X = np.clip(rng.standard_normal((n, d)), -alg.x_bound, alg.x_bound)
        y = np.clip(X @ rng.standard_normal(d), -alg.y_bound, alg.y_bound)
        xq = np.clip(rng.standard_normal(d), -alg.x_bound, alg.x_bound)
        tok = ic.tokens.encode(X, y, xq)
        want = np.array([ref(X[:k], y[:k]) @ (xq if k == n else X[k]) for k in range(n + 1)])
        got = alg.interpret(tok)[0]
        errs_i.append(np.max(np.abs(got - want) / (1 + np.abs(want))))
        if model is not None:
            out = model(tok)[0]
            errs_m.append(np.max(np.abs(out - want) / (1 + np.abs(want))))
    p = alg.program()
    rec = {"name": name, "d": d, "n": n, "interp_err": float(max(errs_i)),
           "model_err": float(max(errs_m)) if errs_m else None, "rows": p.layout.size}
    if model is not None:
        rec.update(depth_n=model.depth(n), depth_256=model.depth(256), width=model.d_model, d_mlp=model.d_mlp,
                   params=model.n_params())
    return rec


def table(recs):
    lines = []
    for name in ("batch_gd", "newton", "gd_plus_plus", "preconditioned_gd"):
        lines += [f"\n{name}\n", "| d | n | layers | width D | MLP width | parameters | float64 error (model vs reference) | interpreter vs reference |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted((r for r in recs if r["name"] == name), key=lambda r: (r["d"], r["n"])):
            if r.get("model_err") is None:
                lines.append(f"| {r['d']} | {r['n']} | — | {r['rows']} rows | — | not compiled (d³ products: GB of weights) | — | {r['interp_err']:.1e} |")
            else:
                lines.append(f"| {r['d']} | {r['n']} | {r['depth_n']} | {r['width']} | {r['d_mlp']} | {r['params']:,} | "
                             f"{r['model_err']:.1e} | {r['interp_err']:.1e} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    recs = [json.loads(l) for l in open(OUT)] if os.path.exists(OUT) else []
    if args.table:
        print(table(recs))
        return
    torch.set_num_threads(1)
    done = {(r["name"], r["d"], r["n"]) for r in recs}
    for name in ("batch_gd", "preconditioned_gd", "gd_plus_plus", "newton"):
        for d in (2, 8, 16):
            for n in (8, 32):
                if (name, d, n) in done:
                    continue
                t0 = time.time()
                compiled = not (d == 16 and name in ("newton", "gd_plus_plus"))
                try:
                    rec = measure(name, d, n, compiled)
                except ic.errors.ICLConstructError as exc:
                    rec = {"name": name, "d": d, "n": n, "error": f"{type(exc).__name__}: {exc}"[:300]}
                rec["seconds"] = round(time.time() - t0, 1)
                with open(OUT, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(rec, flush=True)


if __name__ == "__main__":
    main()
