"""Building sparse from the start at scale (not a test): ``compile(..., sparse=True)``.

    nice -n 10 python bench/bench_sparse_build.py run      # every grid point, each in its own process
    python bench/bench_sparse_build.py tables              # write the table into docs/scale.md (§4)

Per grid point (a fresh process, address space capped at 8 GB): program construction, the
sparse build, the pruned sparse prediction at the last column (n = 32 examples, batch 4;
``iclconstruct.runtime.run_pruned``), ``predict_prefixes`` (all 32 prefixes), peak resident
set (VmHWM) and the largest relative error against the numpy reference. Where the dense
model is small enough (≤ 30M parameters) it also builds densely, converts with
``to_sparse()`` and records whether ``to_dense()`` of the sparse-built model equals the dense
build bit for bit. One JSON line per grid point in ``bench/results/sparse_build.jsonl``
(resumable: points already there are skipped).
"""
from __future__ import annotations

import json
import pathlib
import platform
import re
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "sparse_build.jsonl"
DOC = ROOT / "docs" / "scale.md"
GRID = [("ridge", 8), ("ridge", 16), ("ridge", 24), ("ridge", 32), ("ridge", 48), ("ridge", 64),
        ("sgd", 8), ("sgd", 32), ("sgd", 128), ("sgd", 256)]
MEM_LIMIT_GB = 8
DENSE_CHECK_PARAMS = 30_000_000


def _peak_gb() -> float:
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 2 ** 20


def one(circuit: str, d: int, n: int = 32, B: int = 4) -> dict:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT_GB << 30, MEM_LIMIT_GB << 30))
    torch.set_num_threads(1)
    import iclconstruct as ic
    from iclconstruct.circuit_file import dense_bytes

    rng = np.random.default_rng(2)
    X = np.clip(rng.standard_normal((B, n, d)), -4, 4)
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((B, d)))
    xq = np.clip(rng.standard_normal((B, d)), -4, 4)
    t0 = time.perf_counter()
    if circuit == "sgd":
        lr = 0.5 / (2 * float((X * X).sum(-1).max()))
        prog = ic.circuits.sgd_program(d, lr)
        ref = np.einsum("bd,bd->b", xq, ic.reference.sgd(X, y, lr))
        ref_prefix = lambda k: ic.reference.sgd(X[:, :k], y[:, :k], lr)
    else:
        prog = ic.circuits.ridge_program(d, 0.1)
        ref = np.einsum("bd,bd->b", xq, ic.reference.ridge(X, y, 0.1))
        ref_prefix = lambda k: ic.reference.ridge(X[:, :k], y[:, :k], 0.1)
    t1 = time.perf_counter()
    m = ic.compile(prog, sparse=True, max_len=2 * n + 1)
    t2 = time.perf_counter()
    pp = ic.runtime.run_pruned(m, ic.tokens.encode(X, y, xq), readout="last")
    t3 = time.perf_counter()
    pre = m.predict_prefixes(X, y)
    t4 = time.perf_counter()
    peak = _peak_gb()
    # predict_prefixes[:, k] predicts x_k from the first k examples (k ≥ 1)
    ref_pre = np.stack([np.einsum("bd,bd->b", X[:, k], ref_prefix(k)) for k in range(1, n)], 1)
    rel = lambda a, b: float(np.max(np.abs(np.asarray(a) - b) / (1 + np.abs(b))))
    nnz = sum(int(b.Wq.count_nonzero() + b.Wk.count_nonzero()) + sum(int(t._nnz()) for t in (b.Vt, b.Ot, b.Wint, b.Woutt))
              + int(b.b_in.count_nonzero() + b.b_out.count_nonzero()) for b in m.blocks)
    row = {"key": f"{circuit} d={d}", "circuit": circuit, "d": d, "n": n, "batch": B, "D": m.d_model,
           "d_mlp": m.d_mlp, "layers": len(m.blocks), "dense_params": dense_bytes(m) // m.W_E.element_size(),
           "nonzero": nnz, "program_s": t1 - t0, "build_s": t2 - t1, "pruned_predict_s": t3 - t2,
           "predict_prefixes_s": t4 - t3, "peak_rss_gb": peak, "pruned_vs_numpy": rel(pp[:, 0], ref),
           "prefixes_vs_numpy": rel(pre[:, 1:], ref_pre), "status": "ok"}
    if row["dense_params"] <= DENSE_CHECK_PARAMS:  # after the peak was read: the dense build is far larger
        t5 = time.perf_counter()
        dense = ic.compile(prog, max_len=2 * n + 1)
        t6 = time.perf_counter()
        dense.to_sparse()
        t7 = time.perf_counter()
        back = m.to_dense()
        sd, sb = dense.state_dict(), back.state_dict()
        row.update({"dense_build_s": t6 - t5, "to_sparse_s": t7 - t6,
                    "same_weights": all(torch.equal(sd[k], sb[k]) and torch.equal(sd[k].signbit(), sb[k].signbit())
                                        for k in sd)})
    return row


def run() -> None:
    done = set()
    if OUT.exists():
        done = {json.loads(l)["key"] for l in OUT.read_text().splitlines() if l.strip()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    for circuit, d in GRID:
        key = f"{circuit} d={d}"
        if key in done:
            continue
        try:
            res = subprocess.run([sys.executable, __file__, "one", circuit, str(d)], capture_output=True, text=True,
                                 timeout=900)
            line = res.stdout.strip().splitlines()[-1] if res.returncode == 0 else None
            row = json.loads(line) if line else {"key": key, "circuit": circuit, "d": d,
                                                 "status": f"exit {res.returncode}: {res.stderr.strip()[-200:]}"}
        except subprocess.TimeoutExpired:
            row = {"key": key, "circuit": circuit, "d": d, "status": "did not finish in 900 s"}
        row["machine"] = f"{platform.machine()}, torch {torch.__version__}, 1 thread"
        row["date"] = time.strftime("%Y-%m-%d")
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)


def _s(x) -> str:
    if x is None:
        return "—"
    return f"{x * 1e3:.0f} ms" if x < 1 else f"{x:.2f} s"


def tables() -> None:
    rows = [json.loads(l) for l in OUT.read_text().splitlines() if l.strip()]
    stamp = (f"_Measured {rows[-1].get('date', '')} by `python bench/bench_sparse_build.py run` on "
             f"{rows[-1].get('machine', '')}, CPU only, on a 2-core machine shared with a training job._")
    lines = ["| circuit | d | D | d_mlp | dense parameters | non-zero | program | sparse build | pruned predict n=32 | "
             "build + predict | predict_prefixes (32) | peak RSS | vs numpy | dense build + to_sparse | same weights |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['circuit']} | {r['d']} | not measured: {r['status']} |" + " |" * 12)
            continue
        dense = (f"{_s(r['dense_build_s'])} + {_s(r['to_sparse_s'])}" if "dense_build_s" in r else "not built")
        same = {True: "bit for bit", False: "**no**"}.get(r.get("same_weights"), "—")
        lines.append(
            f"| {r['circuit']} | {r['d']} | {r['D']:,} | {r['d_mlp']:,} | {r['dense_params']:,} | {r['nonzero']:,} | "
            f"{_s(r['program_s'])} | {_s(r['build_s'])} | {_s(r['pruned_predict_s'])} | "
            f"{_s(r['program_s'] + r['build_s'] + r['pruned_predict_s'])} | {_s(r['predict_prefixes_s'])} | "
            f"{r['peak_rss_gb']:.2f} GB | {max(r['pruned_vs_numpy'], r['prefixes_vs_numpy']):.1e} | {dense} | {same} |")
    text = DOC.read_text()
    pat = re.compile(r"(<!-- bench:sparse_build -->\n).*?(\n<!-- /bench:sparse_build -->)", re.S)
    DOC.write_text(pat.sub(lambda m: m.group(1) + stamp + "\n\n" + "\n".join(lines) + m.group(2), text))


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "tables"
    if what == "one":
        print(json.dumps(one(sys.argv[2], int(sys.argv[3]))))
    elif what == "run":
        run()
    else:
        tables()
