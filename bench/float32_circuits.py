"""float32 accuracy of every circuit over d ∈ {2, 8, 16}, n ∈ {8, 32, 64} (docs/algorithms.md, "float32, every circuit").

    nice python bench/float32_circuits.py            # measure the cells still missing (resumable)
    python bench/float32_circuits.py --docs          # write the table into docs/algorithms.md

Per cell: 4 tasks with anisotropic x (per-axis scales 0.2–1.5, rotated; clipped to the circuit's
x_bound), w ~ N(0, I), y = wᵀx; the error is max over tasks and every prefix of
|model − reference| / (1 + |reference|), or the refusal the model raised. Each cell runs in a
subprocess (``--cell NAME D N``) so one model's memory goes back before the next; newton at
d = 16 is skipped (its float32 model, Richardson units, needs more memory than this machine's budget
for a bench).
"""
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import iclconstruct as ic

ROOT = Path(__file__).resolve().parents[1]
#: ICL_F32_N=8 measures Constants.float32(product_scale=8) into its own file (a comparison, not the table)
#: ICL_F32_K=3e4 measures Constants.float32(ln_anchor=3e4, div_scale=3e4) likewise (float32_circuits_K3e4.jsonl)
N_OVERRIDE, K_OVERRIDE = os.environ.get("ICL_F32_N"), os.environ.get("ICL_F32_K")
OVERRIDES = {**({"product_scale": float(N_OVERRIDE)} if N_OVERRIDE else {}),
             **({"ln_anchor": float(K_OVERRIDE), "div_scale": float(K_OVERRIDE)} if K_OVERRIDE else {})}
OUT = ROOT / "bench" / "results" / ("float32_circuits" + (f"_N{N_OVERRIDE}" if N_OVERRIDE else "")
                                    + (f"_K{K_OVERRIDE}" if K_OVERRIDE else "") + ".jsonl")
DIMS, NS = (2, 8, 16), (8, 32, 64)
C, R = ic.circuits, ic.reference


def circuits(d):
    """name -> (make(dtype) -> model, reference(X, y) -> w)."""
    P = np.diag(np.linspace(0.5, 1.5, d))
    kw = dict(dtype=torch.float32, constants=ic.Constants.float32(**OVERRIDES))
    return {
        "sgd lr=0.5/(d·9)": (lambda: C.sgd(d, 0.5 / (9 * d), max_len=129, **kw), lambda X, y: R.sgd(X, y, 0.5 / (9 * d))),
        "ridge lam=0.1": (lambda: C.ridge(d, 0.1, max_len=129, **kw), lambda X, y: R.ridge(X, y, 0.1)),
        "ridge lam=1": (lambda: C.ridge(d, 1.0, max_len=129, **kw), lambda X, y: R.ridge(X, y, 1.0)),
        "batch_gd lr=0.005 steps=3": (lambda: C.batch_gd(d, 0.005, steps=3, **kw),
                                      lambda X, y: R.batch_gd(X, y, 0.005, 3)),
        "preconditioned_gd lr=0.005 steps=3": (lambda: C.preconditioned_gd(d, 0.005, 3, P=P, **kw),
                                               lambda X, y: R.preconditioned_gd(X, y, 0.005, 3, P=P)),
        "gd_plus_plus lr=0.005 gamma=0.005 steps=2": (lambda: C.gd_plus_plus(d, 0.005, 0.005, steps=2, **kw),
                                                      lambda X, y: R.gd_plus_plus(X, y, 0.005, 0.005, 2)),
        "newton steps=8": (lambda: C.newton(d, 8, m_bound=20.0, **kw), lambda X, y: R.newton(X, y, 8, alpha="trace")),
    }


def cell(name, d, n):
    make, ref = circuits(d)[name]
    t0 = time.time()
    rec = {"circuit": name, "d": d, "n": n, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    try:
        m = make()
    except Exception as e:  # noqa: BLE001 - recorded, not raised: a bench row
        rec["error"] = f"build: {type(e).__name__}: {str(e)[:160]}"
        return rec
    rng = np.random.default_rng(1000 * d + n)
    xb = m.layout["x"].bound
    worst, refused = 0.0, None
    for _ in range(4):
        Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
        X = (rng.standard_normal((n + 1, d)) * rng.uniform(0.2, 1.5, d)) @ Q.T
        X *= min(1.0, 0.999 * xb / np.abs(X).max())
        y = X @ rng.standard_normal(d)
        y *= min(1.0, 0.999 * m.layout["y"].bound / np.abs(y).max())
        Xn, yn, xq = X[:n], y[:n], X[n]
        want = np.array([(ref(Xn[:k], yn[:k]) if k else np.zeros(d)) @ (xq if k == n else Xn[k]) for k in range(n + 1)])
        if name.startswith("sgd") or name.startswith("ridge"):
            want[0] = 0.0
        try:
            got = np.asarray(m(ic.tokens.encode(Xn, yn, xq)), dtype=np.float64)[0]
        except ic.errors.ICLConstructError as e:
            refused = f"{type(e).__name__}: {str(e)[:160]}"
            continue
        worst = max(worst, float(np.max(np.abs(got - want) / (1 + np.abs(want)))))
    rec.update(err=worst, refused=refused, seconds=round(time.time() - t0, 1),
               peak_rss_MB=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    return rec


def rows():
    return [json.loads(line) for line in OUT.open()] if OUT.exists() else []


def table() -> str:
    rs = {(r["circuit"], r["d"], r["n"]): r for r in rows()}
    names = list(circuits(2))
    out = ["| circuit | " + " | ".join(f"d={d}, n={n}" for d in DIMS for n in NS) + " |",
           "|---|" + "---|" * (len(DIMS) * len(NS))]
    for name in names:
        cells = []
        for d in DIMS:
            for n in NS:
                r = rs.get((name, d, n))
                if r is None:
                    cells.append("—")
                elif "error" in r:
                    cells.append("not built")
                else:
                    s = f"{r['err']:.1e}" if r["err"] else ""
                    cells.append((s + (" (some refused)" if s else "refused") if r["refused"] else s))
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    if "--cell" in sys.argv:
        i = sys.argv.index("--cell")
        torch.set_num_threads(1)
        print(json.dumps(cell(sys.argv[i + 1], int(sys.argv[i + 2]), int(sys.argv[i + 3]))))
        return
    if "--docs" in sys.argv:
        doc = ROOT / "docs" / "algorithms.md"
        text = doc.read_text()
        stamp = (f"_Measured by `python bench/float32_circuits.py` ({time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
                 "CPU): max over 4 anisotropic tasks and every prefix of |model − reference|/(1 + |reference|); "
                 "Constants.float32(); newton d = 16 not built here._")
        new = f"<!-- bench:float32 -->\n{stamp}\n\n{table()}\n<!-- /bench:float32 -->"
        text = re.sub(r"<!-- bench:float32 -->.*?<!-- /bench:float32 -->", lambda _: new, text, flags=re.S)
        doc.write_text(text)
        print(table())
        return
    done = {(r["circuit"], r["d"], r["n"]) for r in rows()}
    for d in DIMS:
        for name in circuits(d):
            if name.startswith("newton") and d == 16:
                continue
            for n in NS:
                if (name, d, n) in done:
                    continue
                p = subprocess.run([sys.executable, __file__, "--cell", name, str(d), str(n)], capture_output=True,
                                   text=True, timeout=1800)
                line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else json.dumps(
                    {"circuit": name, "d": d, "n": n, "error": f"cell died: {p.stderr[-200:]}"})
                with OUT.open("a") as f:
                    f.write(line + "\n")
                print(line, flush=True)


if __name__ == "__main__":
    main()
