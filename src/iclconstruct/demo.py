"""The library's main job in one call: build circuits and show they match their references.

``python -m iclconstruct demo`` (or ``iclconstruct demo``) compiles each primitive alone and
a random program, and the Theorem 1 / Theorem 2 circuits, then compares them with the
float64 interpreter and the numpy solvers on random tasks, printing a table.
"""
from __future__ import annotations

import time
from typing import List, Tuple

import numpy as np

__all__ = ["run_demo"]


def _primitive_programs(d: int):
    from .lang.program import Program

    out = []
    p = Program(d, name="mov")
    p.slot("o", d)
    p.mov("x", "o", offset=1)
    out.append((p, "o"))
    p = Program(d, name="mul")
    p.slot("o", 1, bound=100.0 * d)
    p.mul("x", "x", "o")
    out.append((p, "o"))
    p = Program(d, name="div")
    p.slot("c", 1, bound=10)
    p.slot("o", d, bound=10)
    p.aff("c", {"y": 0.1}, bias=3.0)
    p.div("x", "c", "o")
    out.append((p, "o"))
    p = Program(d, name="aff")
    p.slot("o", 1, bound=40)
    p.aff("o", {"x": np.full((1, d), 1.0 / d), "y": 2.0}, bias=1.0)
    out.append((p, "o"))
    return out


def run_demo(seed: int = 0, d: int = 4, n: int = 8, batch: int = 16, verbose: bool = True) -> List[Tuple[str, float]]:
    """Run the checks; returns ``(name, max error/(1+|ref|))`` rows and prints a table."""
    import torch

    from . import circuits, reference, tokens
    from .compiler.build import compile
    from .lang.interpreter import interpret

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    rows: List[Tuple[str, float, str]] = []
    # primitives: compiled model vs the interpreter, inputs in [-10, 10]
    for prog, slot in _primitive_programs(d):
        prog.readout(slot if prog.layout[slot].size == 1 else _first_row(prog, slot), columns="all")
        tok = tokens.encode(rng.uniform(-10, 10, (batch, n, d)), rng.uniform(-10, 10, (batch, n)),
                            rng.uniform(-10, 10, (batch, d)))
        t0 = time.perf_counter()
        m = compile(prog)
        H = m.residual(tok).numpy()
        ref = interpret(prog, tok).H
        rows_u = prog.layout.user_rows()
        err = float(np.max(np.abs(H[..., rows_u] - ref[..., rows_u]) / (1 + np.abs(ref[..., rows_u]))))
        rows.append((f"primitive {prog.name}", err, f"{m.n_layers_unique} layer(s), {(time.perf_counter() - t0) * 1e3:.0f} ms"))
    # the paper's circuits vs the numpy solvers on random tasks (x, w ~ N(0, I))
    X = rng.standard_normal((batch, n, d))
    w = rng.standard_normal((batch, d))
    y = np.einsum("bnd,bd->bn", X, w)
    xq = rng.standard_normal((batch, d))
    lr = 0.5 / (2 * float((X * X).sum(-1).max()))
    for name, model, ref_w in (
        (f"Theorem 1: sgd(lr={lr:.3g}, lam=0.1)", circuits.sgd(d, lr, lam=0.1), reference.sgd(X, y, lr, lam=0.1)),
        ("Theorem 2: ridge(lam=0.5)", circuits.ridge(d, 0.5), reference.ridge(X, y, 0.5)),
    ):
        t0 = time.perf_counter()
        pred = model.predict(X, y, xq)
        ref = np.einsum("bd,bd->b", xq, ref_w)
        err = float(np.max(np.abs(pred - ref) / (1 + np.abs(ref))))
        rows.append((name, err, f"{model.layers_per_example()} layers/example, width {model.d_model}, "
                                f"{(time.perf_counter() - t0) * 1e3:.0f} ms"))
    if verbose:
        print(f"iclconstruct demo: d = {d}, n = {n} examples, batch {batch}, float64, default constants")
        print(f"{'check':<44}{'max err/(1+|ref|)':>20}   notes")
        for name, err, note in rows:
            print(f"{name:<44}{err:>20.2e}   {note}")
        ok = all(err <= 1e-6 for _, err, _ in rows)
        print("all within 1e-6" if ok else "SOME CHECKS EXCEED 1e-6")
    return [(a, b) for a, b, _ in rows]


def _first_row(prog, slot):
    prog.slot("out", 1, bound=prog.layout[slot].bound)
    prog.aff("out", {slot: np.eye(prog.layout[slot].size)[:1]})
    return "out"
