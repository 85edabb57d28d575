"""Long soak of the miscompile guard (not a test): many random programs vs the interpreter.

    nice -n 10 python bench/soak_random_programs.py --examples 10000            # resumable
    nice -n 10 python bench/soak_random_programs.py --examples 10000 --reverse  # optional second process
    python bench/soak_random_programs.py --examples 10000 --report             # totals so far

Programs come from :func:`iclconstruct.testing.programs` (every documented Program feature),
tokens from :func:`iclconstruct.testing.tokens_for`. Each program is compiled and compared
with the interpreter at every sublayer (:func:`iclconstruct.testing.compare_with_interpreter`).
Outcomes per program: ``ok``, ``mismatch`` (the model disagrees with the interpreter),
``refused`` (a library error on an in-range program: spurious) or ``crash`` (any other
exception). Work is done in chunks of ``--chunk`` programs with seeds ``0, 1, 2, …``; each
finished chunk appends one JSON line to ``--out``, and a restart skips the chunks already
there (resumable). The last line printed is the total. CI runs the same property with 100
examples (tests/test_random_programs.py).
"""
import argparse
import json
import os
import time
import traceback

import torch
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.errors import ICLConstructError
from iclconstruct.testing import compare_with_interpreter, programs, tokens_for


def run_chunk(chunk_seed: int, n: int) -> dict:
    counts = {"ok": 0, "mismatch": 0, "refused": 0, "crash": 0}
    failures = []

    @seed(chunk_seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(programs(), st.data())
    def body(prog, data):
        tok = data.draw(tokens_for(prog))
        try:
            msg = compare_with_interpreter(ic.compile(prog), tok)
            kind = "ok" if msg is None else "mismatch"
        except ICLConstructError as exc:
            kind, msg = "refused", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - a soak records every failure
            kind, msg = "crash", "".join(traceback.format_exception_only(type(exc), exc))
        counts[kind] += 1
        if kind != "ok" and len(failures) < 5:
            failures.append({"kind": kind, "message": msg[:2000], "program": prog.listing(),
                             "T": int(tok.shape[1])})

    body()
    return {"seed": chunk_seed, "programs": sum(counts.values()), **counts, "failures": failures}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=10000, help="total programs")
    ap.add_argument("--chunk", type=int, default=250, help="programs per chunk (one JSON line each)")
    ap.add_argument("--out", default="bench/results/soak_random_programs.jsonl")
    ap.add_argument("--reverse", action="store_true",
                    help="take chunks from the last one down (a second process can share the work)")
    ap.add_argument("--report", action="store_true", help="only print the totals of --out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)

    def read_done():
        done = {}
        if os.path.exists(args.out):
            with open(args.out) as f:
                for line in f:
                    if line.strip():
                        rec = json.loads(line)
                        done[rec["seed"]] = rec  # a chunk run twice counts once
        return done

    n_chunks = -(-args.examples // args.chunk)
    order = range(n_chunks - 1, -1, -1) if args.reverse else range(n_chunks)
    for s in order if not args.report else []:
        if s in read_done():  # re-read: another process may share the file
            continue
        t0 = time.time()
        rec = run_chunk(s, args.chunk)
        rec["seconds"] = round(time.time() - t0, 1)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"chunk {s}: {rec['programs']} programs, {rec['mismatch']} mismatches, {rec['refused']} refused, "
              f"{rec['crash']} crashes ({rec['seconds']} s)", flush=True)
    done = read_done()
    recs = [done[s] for s in range(n_chunks) if s in done]
    tot = {k: sum(r[k] for r in recs) for k in ("programs", "ok", "mismatch", "refused", "crash")}
    print(f"TOTAL {tot['programs']} random programs: {tot['ok']} ok, {tot['mismatch']} mismatches, "
          f"{tot['refused']} spurious library errors, {tot['crash']} crashes")


if __name__ == "__main__":
    main()
