"""Circuits at scale (not tests): pruned/streaming evaluation, sparse weights, plain-transformer parity.

    nice -n 10 nohup python bench/bench_scale.py stream &   # full pass vs pruned vs stream vs numpy
    nice -n 10 nohup python bench/bench_scale.py sparse &   # dense vs structured-sparse, d = 8 … 64
    nice -n 10 nohup python bench/bench_scale.py plain &    # library forward vs a plain torch transformer
    python bench/bench_scale.py tables                      # write the tables into docs/scale.md

Each section appends one CSV row per measurement to ``bench/results/scale_<section>.csv`` as
soon as it is measured and skips rows already there (resumable). Every ratio is between two
timings taken in the same run, on the same machine. Fitted exponents are least-squares
slopes of log(time) against log(size) over the grid.
"""
from __future__ import annotations

import csv
import gc
import math
import pathlib
import platform
import re
import resource
import sys
import time

import numpy as np
import torch

import iclconstruct as ic
import iclconstruct.runtime
from iclconstruct.runtime import cell_plan

ROOT = pathlib.Path(__file__).resolve().parent.parent
RES = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "scale.md"
torch.set_num_threads(1)


def _csv(section):
    return RES / f"scale_{section}.csv"


def done(section, key):
    f = _csv(section)
    if not f.exists():
        return False
    with f.open() as fh:
        return any(r.get("key") == key for r in csv.DictReader(fh))


def write(section, row):
    f = _csv(section)
    RES.mkdir(parents=True, exist_ok=True)
    new = not f.exists()
    with f.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
    print(row, flush=True)


def rows(section):
    f = _csv(section)
    if not f.exists():
        return []
    with f.open() as fh:
        return list(csv.DictReader(fh))


def timed(fn, reps=1):
    best = math.inf
    out = None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def task(rng, B, n, d):
    X = np.clip(rng.standard_normal((B, n, d)), -4, 4)
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((B, d)))
    return X, y, np.clip(rng.standard_normal((B, d)), -4, 4)


def relerr(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / (1 + np.abs(np.asarray(b)))))


def fit_exponent(xs, ys):
    xs, ys = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(xs, ys, 1)[0]) if len(xs) >= 2 else float("nan")


# ------------------------------------------------------------------------------ stream
def ridge_prefix_numpy(X, y, lam):
    """All-prefix ridge predictions with numpy (one solve per prefix): the baseline."""
    B, n, d = X.shape
    out = np.zeros((B, n))
    for k in range(1, n):
        w = ic.reference.ridge(X[:, :k], y[:, :k], lam)
        out[:, k] = np.einsum("bd,bd->b", X[:, k], w)
    return out


def section_stream(full_budget_s=420.0):
    d, lam, B = 8, 0.1, 4
    rng = np.random.default_rng(0)
    fits = []
    for n in (8, 16, 32, 64, 128, 256, 512):
        key = f"ridge d={d} n={n}"
        if done("stream", key):
            r = [r for r in rows("stream") if r["key"] == key][0]
            if r["full_s"]:
                fits.append((n, float(r["full_s"])))
            continue
        m = ic.circuits.ridge(d, lam, max_len=2 * n + 1)
        X, y, xq = task(rng, B, n, d)
        t_pr, pr = timed(lambda: m.predict_prefixes(X, y))
        t_np, ref = timed(lambda: ridge_prefix_numpy(X, y, lam))

        def stream():
            s = m.stream()
            outs = []
            for k in range(n):
                outs.append(s.predict(X[:, k]))
                s.add(X[:, k], y[:, k])
            return s, np.stack(outs, 1)

        t_st, (s, st_out) = timed(stream)
        # per-add time over the last quarter of a second stream (steady state)
        s2 = m.stream()
        ts = []
        for k in range(n):
            t0 = time.perf_counter()
            s2.add(X[:, k], y[:, k])
            ts.append(time.perf_counter() - t0)
        t_add = float(np.median(ts[-max(1, n // 4):]))
        # full pass: measured while the fitted extrapolation stays inside the budget
        guess = None
        if len(fits) >= 2:
            e = fit_exponent(*zip(*fits[-3:]))
            guess = fits[-1][1] * (n / fits[-1][0]) ** e
        t_full, full, err_full = "", None, ""
        if guess is None or guess < full_budget_s:
            t_full, full = timed(lambda: m(ic.tokens.encode(X, y, None)))
            fits.append((n, t_full))
            err_full = relerr(pr, full)
        write("stream", {
            "key": key, "n": n, "d": d, "batch": B,
            "full_s": t_full, "full_extrapolated_s": "" if guess is None else guess,
            "pruned_s": t_pr, "stream_total_s": t_st, "stream_add_s": t_add, "numpy_s": t_np,
            "cells_pruned": cell_plan(m, 2 * n).cells, "cells_full": 2 * n * len(m.unrolled(2 * n)),
            "pruned_vs_full": err_full, "pruned_vs_numpy": relerr(pr[:, 1:], ref[:, 1:]),
            "full_vs_numpy": "" if full is None else relerr(full[:, 1:], ref[:, 1:]),
            "stream_vs_pruned": relerr(st_out, pr), "rebuilds": s.rebuilds,
        })
        del m
        gc.collect()


def section_addcost(n_big=512, n_small=64, d=8):
    """One add at n ≈ n_big vs at n ≈ n_small, interleaved in one time window (load-fair)."""
    if done("addcost", f"ridge d={d}"):
        return
    rng = np.random.default_rng(3)
    m = ic.circuits.ridge(d, 0.1, max_len=2 * n_big + 1)
    X, y, _ = task(rng, 4, n_big, d)
    big, small = m.stream(), m.stream()
    t_big, t_small, c_big, c_small = [], [], [], []
    for k in range(n_big):
        if small.n == n_small:
            small = m.stream()
        for s_, ts, cs, kk in ((big, t_big, c_big, k), (small, t_small, c_small, small.n)):
            e0 = s_.evaluated
            t0 = time.perf_counter()
            s_.add(X[:, kk], y[:, kk])
            late = k >= n_big - n_small  # both measured over the last stretch of the run
            if late and (kk >= n_big - n_small // 4 if s_ is big else kk >= n_small // 2):
                ts.append(time.perf_counter() - t0)
                cs.append(s_.evaluated - e0)
    write("addcost", {"key": f"ridge d={d}", "n_big": n_big, "n_small": n_small,
                      "add_big_s": float(np.median(t_big)), "add_small_s": float(np.median(t_small)),
                      "ratio": float(np.median(t_big) / np.median(t_small)),
                      "cells_per_add_big": float(np.mean(c_big)), "cells_per_add_small": float(np.mean(c_small)),
                      "rebuilds": big.rebuilds})


# ------------------------------------------------------------------------------ plain parity
class PlainBlock(torch.nn.Module):
    """A stock Eq. 4 layer from torch primitives (fused QKV, SDPA), random weights."""

    def __init__(self, D, H, e, m, dtype):
        super().__init__()
        g = lambda *s: torch.nn.Parameter(torch.randn(*s, dtype=dtype) * 0.02, requires_grad=False)
        self.qkv, self.o = g(D, 3 * H * e), g(H * e, D)
        self.w1, self.b1, self.w2, self.b2 = g(D, m), g(m), g(m, D), g(D)
        self.H, self.e = H, e

    def forward(self, h):
        B, T, D = h.shape
        q, k, v = (h @ self.qkv).view(B, T, 3, self.H, self.e).permute(2, 0, 3, 1, 4)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + a.transpose(1, 2).reshape(B, T, -1) @ self.o
        x = torch.nn.functional.layer_norm(h, (D,))
        return h + torch.nn.functional.gelu(x @ self.w1 + self.b1) @ self.w2 + self.b2


def section_plain():
    rng = np.random.default_rng(1)
    for name, mk, d, n in (("ridge", lambda: ic.circuits.ridge(8, 0.1, sparse=False), 8, 16),
                           ("ridge", lambda: ic.circuits.ridge(4, 0.5, sparse=False), 4, 32),
                           ("ridge", lambda: ic.circuits.ridge(16, 0.5, sparse=False), 16, 8),
                           ("sgd", lambda: ic.circuits.sgd(16, 0.001, sparse=False), 16, 32),
                           ("sgd", lambda: ic.circuits.sgd(64, 0.001, sparse=False), 64, 32),
                           ("sgd", lambda: ic.circuits.sgd(4, 0.01, sparse=False), 4, 16)):
        key = f"{name} d={d} n={n}"
        if done("plain", key):
            continue
        m = mk()
        X, y, xq = task(rng, 4, n, d)
        X = X * 0.5
        tok = torch.as_tensor(ic.tokens.encode(X, y, xq))
        T = tok.shape[1]
        blocks = [PlainBlock(m.d_model, m.n_heads, m.d_head, m.d_mlp, torch.float64) for _ in m.blocks]
        order = m.unrolled(T)
        h0 = torch.randn(tok.shape[0], T, m.d_model, dtype=torch.float64)

        def plain():
            with torch.no_grad():
                h = h0
                for bi in order:
                    h = blocks[bi](h)
                return h

        # interleaved rounds, best of each: the machine is shared, so load drifts between runs
        t_lib = t_chk = t_plain = math.inf
        for _ in range(5):
            t_lib = min(t_lib, timed(lambda: m(tok, check=False))[0])
            t_plain = min(t_plain, timed(plain)[0])
            t_chk = min(t_chk, timed(lambda: m(tok))[0])
        write("plain", {"key": key, "circuit": name, "d": d, "n": n, "T": T, "layers": len(order),
                        "D": m.d_model, "heads": m.n_heads, "d_head": m.d_head, "d_mlp": m.d_mlp,
                        "library_s": t_lib, "library_checked_s": t_chk, "plain_s": t_plain,
                        "ratio": t_lib / t_plain, "ratio_checked": t_chk / t_plain})


# ------------------------------------------------------------------------------ sparse
SPARSE_GRID = [("ridge", 8), ("ridge", 16), ("ridge", 24), ("ridge", 32), ("ridge", 64),
               ("sgd", 8), ("sgd", 32), ("sgd", 128), ("sgd", 256)]
MEM_LIMIT_GB = 8


def sparse_one(circuit, d, n=32, B=4):
    """One grid point, in its own process (peak RSS is per process)."""
    import resource as r

    r.setrlimit(r.RLIMIT_AS, (MEM_LIMIT_GB << 30, MEM_LIMIT_GB << 30))
    rng = np.random.default_rng(2)
    X, y, xq = task(rng, B, n, d)
    row = {"key": f"{circuit} d={d}", "circuit": circuit, "d": d, "n": n, "batch": B}
    if circuit == "sgd":
        lr = 0.5 / (2 * float((X * X).sum(-1).max()))
        prog = ic.circuits.sgd_program(d, lr)
        ref = np.einsum("bd,bd->b", xq, ic.reference.sgd(X, y, lr))
    else:
        prog = ic.circuits.ridge_program(d, 0.1)
        ref = np.einsum("bd,bd->b", xq, ic.reference.ridge(X, y, 0.1))
    t_build, m = timed(lambda: ic.compile(prog, max_len=2 * n + 1))
    t_sp, s = timed(lambda: m.to_sparse())
    big = m.n_params() > 1e8  # the dense pass alone would take most of an hour here
    t_dense, pd = (float("nan"), None) if big else timed(lambda: m.predict(X, y, xq))
    t_sparse, ps = timed(lambda: s.predict(X, y, xq))
    t_pr, pp = timed(lambda: ic.runtime.run_pruned(s, ic.tokens.encode(X, y, xq), readout="last"))
    nnz = sum(int((p != 0).sum()) for b in m.blocks for p in b.parameters())
    row.update({"params": m.n_params(), "nonzero": nnz, "D": m.d_model, "d_mlp": m.d_mlp,
                "build_s": t_build, "to_sparse_s": t_sp, "dense_predict_s": t_dense, "sparse_predict_s": t_sparse,
                "sparse_pruned_predict_s": t_pr, "sparse_vs_dense": "" if big else relerr(ps, pd),
                "dense_vs_ref": "" if big else relerr(pd, ref),
                "sparse_vs_ref": relerr(ps, ref), "pruned_vs_ref": relerr(pp[:, 0], ref),
                "peak_rss_gb": r.getrusage(r.RUSAGE_SELF).ru_maxrss / 2**20, "status": "ok"})
    write("sparse", row)


def section_sparse():
    import subprocess

    for circuit, d in SPARSE_GRID:
        key = f"{circuit} d={d}"
        if done("sparse", key):
            continue
        try:
            res = subprocess.run([sys.executable, __file__, "sparse-one", circuit, str(d)], timeout=900)
            ok = res.returncode == 0
            why = f"exit {res.returncode} (over the {MEM_LIMIT_GB} GB limit or failed)"
        except subprocess.TimeoutExpired:
            ok, why = False, "did not finish in 900 s"
        if not ok and not done("sparse", key):
            write("sparse", {"key": key, "circuit": circuit, "d": d, "n": 32, "batch": 4, "params": "", "nonzero": "",
                             "D": "", "d_mlp": "", "build_s": "", "to_sparse_s": "", "dense_predict_s": "",
                             "sparse_predict_s": "", "sparse_pruned_predict_s": "", "sparse_vs_dense": "",
                             "dense_vs_ref": "", "sparse_vs_ref": "", "pruned_vs_ref": "", "peak_rss_gb": "",
                             "status": why})


# ------------------------------------------------------------------------------ tables
def _fmt_s(x):
    if x in ("", None) or x != x or str(x) == "nan":
        return "—"
    x = float(x)
    if x != x:
        return "—"
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def tables(only=None):
    """Splice the measured tables into docs/scale.md (``only``: the sections to rewrite, default all)."""
    want = lambda sec: only is None or sec in only
    stamp = (f"_Measured {time.strftime('%Y-%m-%d')} by `python bench/bench_scale.py` on {platform.machine()}, "
             f"1 torch thread, torch {torch.__version__}, CPU only (no GPU was available)._")
    text = DOC.read_text()
    rs = rows("stream") if want("stream") else []
    if rs:
        full = [(int(r["n"]), float(r["full_s"])) for r in rs if r["full_s"]]
        e_full = fit_exponent(*zip(*full)) if len(full) >= 2 else float("nan")
        pr = [(int(r["n"]), float(r["pruned_s"])) for r in rs]
        e_pr = fit_exponent(*zip(*pr))
        e_add = fit_exponent(*zip(*[(int(r["n"]), float(r["stream_add_s"])) for r in rs]))
        lines = ["| n | cells: full / pruned | full pass | pruned (all prefixes) | full / pruned | stream: n adds + n predicts | "
                 "one add (steady) | numpy (all prefixes) | pruned vs full | pruned vs numpy | full vs numpy |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rs:
            n = int(r["n"])
            if r["full_s"]:
                f, tag = float(r["full_s"]), ""
            else:
                f = full[-1][1] * (n / full[-1][0]) ** e_full
                tag = " (extrapolated)"
            lines.append(
                f"| {n} | {int(r['cells_full']):,} / {int(r['cells_pruned']):,} | {_fmt_s(f)}{tag} | {_fmt_s(r['pruned_s'])} | "
                f"{f / float(r['pruned_s']):,.0f}×{tag} | {_fmt_s(r['stream_total_s'])} | {_fmt_s(r['stream_add_s'])} | "
                f"{_fmt_s(r['numpy_s'])} | {float(r['pruned_vs_full']):.1e} | {float(r['pruned_vs_numpy']):.1e} | "
                f"{float(r['full_vs_numpy']):.1e} |" if r["full_s"] else
                f"| {n} | {int(r['cells_full']):,} / {int(r['cells_pruned']):,} | {_fmt_s(f)}{tag} | {_fmt_s(r['pruned_s'])} | "
                f"{f / float(r['pruned_s']):,.0f}×{tag} | {_fmt_s(r['stream_total_s'])} | {_fmt_s(r['stream_add_s'])} | "
                f"{_fmt_s(r['numpy_s'])} | — | {float(r['pruned_vs_numpy']):.1e} | — |")
        lines.append("")
        lines.append(f"Fitted exponents (time ∝ n^e over the grid): full pass e = {e_full:.2f}, "
                     f"pruned all-prefix pass e = {e_pr:.2f}, one streaming add e = {e_add:.2f}.")
        ra = rows("addcost")
        if ra:
            r = ra[0]
            lines.append("")
            lines.append(f"One streaming add measured in the same time window (interleaved, median): at n ≈ {r['n_big']} "
                         f"{_fmt_s(r['add_big_s'])}, at n ≈ {r['n_small']} {_fmt_s(r['add_small_s'])} — ratio "
                         f"{float(r['ratio']):.2f}; blocks run per add: {float(r['cells_per_add_big']):.1f} vs "
                         f"{float(r['cells_per_add_small']):.1f} (`bench_scale.py addcost`).")
        text = _splice(text, "stream", stamp + "\n\n" + "\n".join(lines))
    rp = rows("plain") if want("plain") else []
    if rp:
        lines = ["| circuit | d | n | layers run | D | heads × d_head | d_mlp | library (check=False) | library (checked) | plain torch | ratio | ratio (checked) |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rp:
            lines.append(f"| {r['circuit']} | {r['d']} | {r['n']} | {r['layers']} | {r['D']} | {r['heads']} × {r['d_head']} | "
                         f"{r['d_mlp']} | {_fmt_s(r['library_s'])} | {_fmt_s(r['library_checked_s'])} | {_fmt_s(r['plain_s'])} | "
                         f"{float(r['ratio']):.2f} | {float(r['ratio_checked']):.2f} |")
        text = _splice(text, "plain", stamp + "\n\n" + "\n".join(lines))
    rs = rows("sparse") if want("sparse") else []
    if rs:
        ok = [r for r in rs if r["status"] == "ok"]
        lines = ["| circuit | d | D | d_mlp | parameters (dense) | non-zero | dense build | → sparse | predict n=32: dense | sparse | "
                 "sparse + pruned | dense / sparse | peak RSS | sparse vs dense | sparse vs numpy |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rs:
            if r["status"] != "ok":
                lines.append(f"| {r['circuit']} | {r['d']} | | | | | not measured: {r['status']} | | | | | | | | |")
                continue
            lines.append(
                f"| {r['circuit']} | {r['d']} | {int(r['D']):,} | {int(r['d_mlp']):,} | {int(r['params']):,} | "
                f"{int(r['nonzero']):,} ({int(r['nonzero']) / int(r['params']):.3%}) | {_fmt_s(r['build_s'])} | "
                f"{_fmt_s(r['to_sparse_s'])} | {_fmt_s(r['dense_predict_s'])} | {_fmt_s(r['sparse_predict_s'])} | "
                f"{_fmt_s(r['sparse_pruned_predict_s'])} | "
                + (f"{float(r['dense_predict_s']) / float(r['sparse_predict_s']):.1f}×" if r["sparse_vs_dense"] else "—")
                + f" | {float(r['peak_rss_gb']):.2f} GB | "
                + (f"{float(r['sparse_vs_dense']):.1e}" if r["sparse_vs_dense"] else "—")
                + f" | {float(r['sparse_vs_ref']):.1e} |")
        fits = []
        for c in ("ridge", "sgd"):
            pts = [(int(r["d"]), r) for r in ok if r["circuit"] == c]
            if len(pts) >= 2:
                ds = [p[0] for p in pts]
                fits.append(f"{c}: parameters ∝ d^{fit_exponent(ds, [int(p[1]['params']) for p in pts]):.2f}, "
                            f"non-zero ∝ d^{fit_exponent(ds, [int(p[1]['nonzero']) for p in pts]):.2f}, "
                            f"dense build ∝ d^{fit_exponent(ds, [float(p[1]['build_s']) for p in pts]):.2f}, "
                            f"peak RSS ∝ d^{fit_exponent(ds, [float(p[1]['peak_rss_gb']) for p in pts]):.2f}, "
                            f"sparse predict ∝ d^{fit_exponent(ds, [float(p[1]['sparse_predict_s']) for p in pts]):.2f}")
        lines += ["", "Fitted exponents over the built grid points: " + "; ".join(fits) + "."]
        text = _splice(text, "sparse", stamp + "\n\n" + "\n".join(lines))
    DOC.write_text(text)


def _splice(text, tag, body):
    pat = re.compile(rf"(<!-- bench:{tag} -->\n).*?(\n<!-- /bench:{tag} -->)", re.S)
    return pat.sub(lambda m: m.group(1) + body + m.group(2), text)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "tables"
    if what == "sparse-one":
        sparse_one(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    if what == "tables":
        tables(sys.argv[2:] or None)  # e.g. `tables plain`: rewrite only that table
        sys.exit(0)
    {"stream": section_stream, "plain": section_plain, "sparse": section_sparse, "addcost": section_addcost}[what]()
    print("peak RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MB")
