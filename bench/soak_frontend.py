"""Long soak of the front end (not a test): random ``@ic.algorithm`` functions, compiled vs interpreted.

    nohup python bench/soak_frontend.py --examples 2000 --out bench/soak_frontend.log &

Each example draws a random algorithm (``iclconstruct.testing.frontend_algorithms``: sums,
means, counts, products, divisions, unrolled loops, ``ctx.examples()`` loops) and a
shifted/anisotropic task, checks interpreter = direct evaluation of the traced DAG (1e-10)
and compiled model = interpreter at every sublayer (1e-6). Results are appended to the log
one line per batch, so an interrupted run can be resumed: the next run continues the count
(hypothesis draws fresh random examples in every batch). CI runs the same property with 40 examples
(tests/test_frontend_random.py).
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.testing import compare_with_interpreter, frontend_algorithms, shifted_tasks


def run_batch(n_examples: int, failures: list) -> int:
    count = [0]

    @settings(max_examples=n_examples, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(frontend_algorithms(max_d=4, max_steps=10), st.data())
    def soak(alg, data):
        X, y, xq = data.draw(shifted_tasks(alg.d, max_n=alg.max_n, x_bound=alg.x_bound, y_bound=alg.y_bound))
        tok = ic.tokens.encode(X, y, xq)
        count[0] += 1
        try:
            got = alg.interpret(tok)[0]
            n = len(X)
            want = [alg.evaluate(X[:k], y[:k], xq if k == n else X[k]) for k in range(n + 1)]
            if not np.allclose(got, want, rtol=1e-10, atol=1e-10):
                failures.append(f"{alg.name}: interpreter != evaluate: {np.max(np.abs(got - np.array(want))):.3g}")
                return
            msg = compare_with_interpreter(alg.compile(), tok, rtol=1e-6, atol=1e-6)
        except ic.errors.ICLConstructError as exc:  # a refusal on valid input is a failure too
            msg = f"{type(exc).__name__}: {exc}"
        if msg is not None:
            failures.append(f"{alg.name} on X={X.tolist()}, y={y.tolist()}, xq={xq.tolist()}: {msg.splitlines()[0]}")

    soak()
    return count[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--out", default="bench/soak_frontend.log")
    args = ap.parse_args()
    torch.set_num_threads(1)
    done, fails = 0, 0
    if os.path.exists(args.out):
        for line in open(args.out):
            rec = json.loads(line)
            done += rec["examples"]
            fails += len(rec["failures"])
    batch = done // args.batch
    while done < args.examples:
        failures: list = []
        t0 = time.time()
        k = run_batch(args.batch, failures)
        done += k
        fails += len(failures)
        with open(args.out, "a") as f:
            f.write(json.dumps({"batch": batch, "examples": k, "failures": failures,
                                "seconds": round(time.time() - t0, 1)}) + "\n")
        batch += 1
        print(f"{done} examples, {fails} mismatches", flush=True)
    print(f"{done} random front-end algorithms: compiled = interpreter = traced meaning; {fails} mismatches")


if __name__ == "__main__":
    main()
