"""Soak of the certificate's soundness: measured error <= model.certify(n).max_abs_error.

Random programs from ``iclconstruct.testing.programs()`` and random SGD / ridge circuits,
float64 and float32, on random in-range inputs. Runs in chunks and appends one JSON line per
chunk to ``bench/results/soak_certificate.jsonl`` (resumable: it counts what is there and
goes on until ``--target`` examples). Run it in the background::

    nohup nice -n 10 python bench/soak_certificate.py --target 5000 &
    # with the count/sum analysis: the zoo circuits too, into a fresh file
    nohup nice -n 10 python bench/soak_certificate.py --zoo --out bench/results/soak_certificate_sums.jsonl --target 5000 &
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.errors import ICLConstructError
from iclconstruct.testing import programs, tokens_for

OUT = Path(__file__).parent / "results" / "soak_certificate.jsonl"


def _measure(model, tok):
    out = model(torch.as_tensor(np.asarray(tok, dtype=np.float64))).double().numpy()  # rounded by the model
    return float(np.abs(out - ic.interpret(model.program, tok, max_len=model.max_len).output).max())


ZOO = ("batch_gd", "newton", "gd_plus_plus", "preconditioned_gd")


def _circuit_case(rng, zoo: bool = False):
    kind = rng.choice(["sgd", "ridge", *ZOO] if zoo else ["sgd", "ridge"])
    dtype = [torch.float64, torch.float32][rng.integers(2)]
    d = int(rng.integers(1, 5))
    n = int(rng.integers(1, 9))
    scale = float(rng.choice([0.3, 1.0, 2.0]))
    X = rng.standard_normal((2, n, d)) * scale * rng.uniform(0.2, 1.5, size=d)  # anisotropic
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((2, d)))
    xq = rng.standard_normal((2, d)) * scale
    if kind == "sgd":
        lr = float(rng.uniform(0.05, 0.99)) / max(float((X ** 2).sum(-1).max()), 1e-9)
        m = ic.circuits.sgd(d, lr, lam=float(rng.choice([0.0, 0.1])), dtype=dtype, max_len=2 * n + 3)
    elif kind == "ridge":
        m = ic.circuits.ridge(d, float(rng.choice([0.5, 1.0, 5.0])), dtype=dtype, max_len=2 * n + 3)
    else:  # the front-end zoo (sums over the examples): inputs kept inside the circuit's declared bounds
        lr = float(rng.choice([0.01, 0.05]))
        m = {"batch_gd": lambda: ic.circuits.batch_gd(d, lr, int(rng.integers(1, 3)), max_n=n + 1, dtype=dtype),
             "newton": lambda: ic.circuits.newton(d, int(rng.integers(1, 4)), max_n=n + 1, dtype=dtype),
             "gd_plus_plus": lambda: ic.circuits.gd_plus_plus(d, lr, 0.1, max_n=n + 1, dtype=dtype),
             "preconditioned_gd": lambda: ic.circuits.preconditioned_gd(d, lr, max_n=n + 1, dtype=dtype)}[kind]()
        xb, yb = m.layout["x"].bound, m.layout["y"].bound
        X, xq = np.clip(X, -0.99 * xb, 0.99 * xb), np.clip(xq, -0.99 * xb, 0.99 * xb)
        y = np.clip(y, -0.99 * yb, 0.99 * yb)
    return m, ic.tokens.encode(X, y, xq), n


def chunk(size: int, seed: int, zoo: bool = False) -> dict:
    stats = {"examples": 0, "refused": 0, "violations": 0, "max_ratio": 0.0, "vacuous": 0, "seed": seed}

    def check(model, tok, n):
        cert = model.certify(max(n, 1))
        try:
            err = _measure(model, tok)
        except ICLConstructError:
            stats["refused"] += 1
            return
        stats["examples"] += 1
        if not np.isfinite(cert.max_abs_error):
            stats["vacuous"] += 1
        if err > cert.max_abs_error:
            stats["violations"] += 1
            stats.setdefault("failures", []).append({"program": model.program.listing(), "err": err,
                                                     "bound": cert.max_abs_error})
        elif err > 0 and np.isfinite(cert.max_abs_error):
            stats["max_ratio"] = max(stats["max_ratio"], err / cert.max_abs_error)

    @settings(max_examples=size, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(programs(max_ops=8), st.data(), st.sampled_from([torch.float64, torch.float32]))
    def random_programs(prog, data, dtype):
        tok = data.draw(tokens_for(prog, max_n=4))
        check(ic.compile(prog, dtype=dtype, max_len=16), tok, tok.shape[1] // 2)

    random_programs()
    rng = np.random.default_rng(seed)
    for _ in range(max(size // 4, 1)):
        m, tok, n = _circuit_case(rng, zoo)
        check(m, tok, n)
    return stats


def main() -> None:
    global OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=int, default=5000)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--out", type=Path, default=OUT, help="the JSONL file to resume and extend")
    ap.add_argument("--zoo", action="store_true", help="draw the front-end zoo circuits (sums) as well as sgd/ridge")
    a = ap.parse_args()
    OUT = a.out
    OUT.parent.mkdir(parents=True, exist_ok=True)
    done, seed = 0, 0
    if OUT.exists():
        for line in OUT.read_text().splitlines():
            rec = json.loads(line)
            done += rec["examples"]
            seed = max(seed, rec["seed"] + 1)
    while done < a.target:
        t = time.time()
        rec = chunk(a.chunk, seed, a.zoo)
        rec["seconds"] = round(time.time() - t, 1)
        with OUT.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        done += rec["examples"]
        seed += 1
    total = [json.loads(l) for l in OUT.read_text().splitlines()]
    print(f"examples {sum(r['examples'] for r in total)}, violations {sum(r['violations'] for r in total)}, "
          f"refused {sum(r['refused'] for r in total)}, vacuous {sum(r['vacuous'] for r in total)}")


if __name__ == "__main__":
    main()
