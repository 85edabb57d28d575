"""Cost tables of the circuit zoo (docs/circuit_*.md): layers, width, parameters and the measured
float64 error against the reference, for d ∈ {2, 8, 16} and n ∈ {8, 32}.

    python bench/bench_zoo.py                              # measure the cells still missing, resumable
    python bench/bench_zoo.py --name newton --d 16 --n 32  # only these cells (flags repeat: --d 8 --d 16)
    python bench/bench_zoo.py --force --name newton        # measure again even where a model error is recorded
    python bench/bench_zoo.py --table                      # print the markdown tables
    python bench/bench_zoo.py --docs                       # write them into docs/circuit_<name>.md

Each cell runs in its own subprocess (``--cell NAME D N``), so the memory of one model (Newton at
d = 16: ~720M float64 parameters, ~6 GB) goes back to the system before the next. A cell counts as
done once bench/zoo_results.jsonl holds it with a model error; a new record replaces the old
one for its cell. A cell that dies (killed, out of memory) or passes ``--timeout`` is recorded
with the reason and no model error.

Error = max over 4 tasks (x, w ~ N(0, I), y = wᵀx) and every prefix of |model − ref| / (1 + |ref|).
"""
import argparse
import json
import os
import pathlib
import re
import resource
import subprocess
import sys
import time

import numpy as np
import torch

import iclconstruct as ic

C, R = ic.circuits, ic.reference
OUT = os.path.join(os.path.dirname(__file__), "zoo_results.jsonl")
DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
NAMES = ("batch_gd", "preconditioned_gd", "gd_plus_plus", "newton")
DIMS, NS = (2, 8, 16), (8, 32)
#: the date of the records written before they carried one
FIRST_RUN = "2026-11-24"


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
    t0 = time.time()
    model = alg.compile() if compiled else None
    compile_s = time.time() - t0
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
                   params=model.n_params(), compile_s=round(compile_s, 1))
    rec.update(peak_rss_MB=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
               date=time.strftime("%Y-%m-%d"), torch=torch.__version__)
    return rec


def cell_row(r):
    rows = f"{r['rows']} rows" if "rows" in r else "—"
    interp = f"{r['interp_err']:.1e}" if r.get("interp_err") is not None else "—"
    if r.get("model_err") is None:
        why = r.get("error") or "not compiled (d³ products: GB of weights)"
        return f"| {r['d']} | {r['n']} | — | {rows} | — | {why} | — | {interp} |"
    return (f"| {r['d']} | {r['n']} | {r['depth_n']} | {r['width']} | {r['d_mlp']} | {r['params']:,} | "
            f"{r['model_err']:.1e} | {interp} |")


def table_of(name, recs):
    rows = sorted((r for r in recs if r["name"] == name), key=lambda r: (r["d"], r["n"]))
    return "\n".join(["| d | n | layers | width D | MLP width | parameters | float64 error (model vs reference) | interpreter vs reference |",
                      "|---|---|---|---|---|---|---|---|"] + [cell_row(r) for r in rows])


def table(recs):
    return "\n".join(f"\n{name}\n\n" + table_of(name, recs) for name in ("batch_gd", "newton", "gd_plus_plus", "preconditioned_gd"))


def stamp(name, recs):
    rows = [r for r in recs if r["name"] == name]
    dates = sorted({r.get("date", FIRST_RUN) for r in rows})
    later = {}  # d -> the n measured on a later date
    for r in sorted(rows, key=lambda r: (r["d"], r["n"])):
        if r.get("date", FIRST_RUN) != dates[0]:
            later.setdefault(r["d"], []).append(str(r["n"]))
    cells = "; ".join(f"d = {d}, n = {', '.join(ns)}" for d, ns in later.items())
    when = dates[0] + (f" ({cells}: {', '.join(dates[1:])})" if later else "")
    rss = [r for r in rows if r.get("peak_rss_MB") and r.get("params")]
    mem = ""
    if rss:
        big = max(rss, key=lambda r: r["params"])
        mem = (f" Largest model: {big['params']:,} parameters ({big['params'] * 8 / 2 ** 30:.1f} GiB in float64), "
               f"compiled in {big['compile_s']:.0f} s with a peak resident set of {big['peak_rss_MB'] / 1024:.1f} GiB "
               f"for its whole cell (one subprocess per cell).")
    return (f"_Measured {when} by `python bench/bench_zoo.py` (float64, torch 2.13 CPU, 1 thread); error = max over "
            f"4 tasks (x, w ~ N(0, I)) and every prefix of |model − reference| / (1 + |reference|).{mem}_")


def write_docs(recs):
    for name in NAMES:
        path = DOCS / f"circuit_{name}.md"
        text = path.read_text()
        pat = re.compile(r"(<!-- bench:zoo -->\n).*?(\n<!-- /bench:zoo -->)", re.S)
        if not pat.search(text):
            raise SystemExit(f"marker bench:zoo missing in {path}")
        body = stamp(name, recs) + "\n\n" + table_of(name, recs)
        path.write_text(pat.sub(lambda m: m.group(1) + body + m.group(2), text))
        print("wrote", path)


def load():
    return [json.loads(l) for l in open(OUT)] if os.path.exists(OUT) else []


def store(rec):
    """Replace the record of ``rec``'s cell (or append it), keeping the file's order."""
    recs, key = load(), (rec["name"], rec["d"], rec["n"])
    at = [i for i, r in enumerate(recs) if (r["name"], r["d"], r["n"]) == key]
    if at:
        recs[at[0]] = rec
        recs = [r for i, r in enumerate(recs) if i not in at[1:]]
    else:
        recs.append(rec)
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    os.replace(tmp, OUT)


def run_cell(name, d, n, timeout):
    """Measure one cell in a subprocess; on failure the record says why."""
    t0 = time.time()
    cmd = [sys.executable, os.path.abspath(__file__), "--cell", name, str(d), str(n)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        why = f"not measured: the cell did not finish within {timeout:.0f} s"
    else:
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if out.returncode == 0 and lines:
            return json.loads(lines[-1])
        if out.returncode < 0:
            why = f"not measured: killed by signal {-out.returncode}" + (" (out of memory)" if out.returncode == -9 else "")
        else:
            why = f"not measured: exit {out.returncode}: " + (out.stderr.strip().splitlines() or [""])[-1][:200]
    rec = {"name": name, "d": d, "n": n, "model_err": None, "error": why}
    make, _ = zoo(d)[name]
    rec.update(interp_err=measure(name, d, n, compiled=False)["interp_err"], rows=make().program().layout.size,
               date=time.strftime("%Y-%m-%d"), seconds=round(time.time() - t0, 1))
    return rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", action="store_true", help="print the markdown tables")
    ap.add_argument("--docs", action="store_true", help="write the tables into docs/circuit_<name>.md")
    ap.add_argument("--name", action="append", choices=NAMES, help="only these circuits (repeatable)")
    ap.add_argument("--d", action="append", type=int, help="only these d (repeatable)")
    ap.add_argument("--n", action="append", type=int, help="only these n (repeatable)")
    ap.add_argument("--force", action="store_true", help="measure again cells that have a model error")
    ap.add_argument("--timeout", type=float, default=4 * 3600.0, help="seconds per cell")
    ap.add_argument("--cell", nargs=3, metavar=("NAME", "D", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cell:  # the child: one cell, one JSON line
        name, d, n = args.cell[0], int(args.cell[1]), int(args.cell[2])
        t0 = time.time()
        try:
            rec = measure(name, d, n)
        except ic.errors.ICLConstructError as exc:
            rec = {"name": name, "d": d, "n": n, "error": f"{type(exc).__name__}: {exc}"[:300]}
        rec["seconds"] = round(time.time() - t0, 1)
        print(json.dumps(rec), flush=True)
        return
    if args.table or args.docs:
        recs = load()
        if args.table:
            print(table(recs))
        if args.docs:
            write_docs(recs)
        return
    done = {(r["name"], r["d"], r["n"]) for r in load() if r.get("model_err") is not None}
    for name in args.name or NAMES:
        for d in args.d or DIMS:
            for n in args.n or NS:
                if (name, d, n) in done and not args.force:
                    continue
                print(f"{name} d={d} n={n} ...", flush=True)
                rec = run_cell(name, d, n, args.timeout)
                store(rec)
                print(rec, flush=True)


if __name__ == "__main__":
    main()
