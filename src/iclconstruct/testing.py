"""Public testing tools: hypothesis strategies and a model-vs-interpreter assertion.

Use them to verify your own circuits the way the library verifies its own::

    from hypothesis import given
    from iclconstruct.testing import programs, tokens_for, assert_matches_interpreter

    @given(programs(), st.data())
    def test_compiles_right(prog, data):
        tok = data.draw(tokens_for(prog))
        assert_matches_interpreter(ic.compile(prog), tok)

Requires ``hypothesis`` (``pip install iclconstruct[test]``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover
    raise ImportError("iclconstruct.testing needs hypothesis: pip install 'iclconstruct[test]'") from exc

from .lang.interpreter import Trace, apply_op, check_op, embed_reference, interpret, readout
from .lang.ops import Div
from .compiler.hooks import block_hook
from .compiler.model import ConstructedTransformer
from .lang.program import Program
from .tokens import encode

__all__ = [
    "regression_tasks",
    "tokens_for",
    "programs",
    "assert_matches_interpreter",
    "compare_with_interpreter",
    "replay_schedule",
    "Mismatch",
]


@st.composite
def regression_tasks(draw, d: Optional[int] = None, n: Optional[int] = None, batch: Optional[int] = None,
                     bound: float = 10.0, max_d: int = 4, max_n: int = 6, max_batch: int = 3):
    """``(X, y, x_query)`` with entries in ``[-bound, bound]`` (numpy, batched)."""
    d = draw(st.integers(1, max_d)) if d is None else d
    n = draw(st.integers(0, max_n)) if n is None else n
    B = draw(st.integers(1, max_batch)) if batch is None else batch
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    X = rng.uniform(-bound, bound, (B, n, d))
    y = rng.uniform(-bound, bound, (B, n))
    xq = rng.uniform(-bound, bound, (B, d))
    # hypothesis-chosen extremes at a random entry, so the corners of the range are exercised
    if n and draw(st.booleans()):
        X[draw(st.integers(0, B - 1)), draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))] = draw(
            st.sampled_from([-bound, bound, 0.0]))
    return X, y, xq


def tokens_for(program: Program, n: Optional[int] = None, max_n: int = 6, max_batch: int = 3):
    """Tokens ``(B, 2n+1, d+1)`` in the paper layout, within the program's input bounds."""
    lay = program.layout
    b = min(lay["x"].bound, lay["y"].bound)
    return regression_tasks(d=lay.d, n=n, bound=b, max_n=max_n, max_batch=max_batch).map(lambda t: encode(*t))


# ---------------------------------------------------------------------- random programs
_POOL_SIZES = (1, 1, 2, 2, 3, 4, 6, 9)


@st.composite
def programs(draw, d: Optional[int] = None, min_ops: int = 1, max_ops: int = 12, loops: bool = True,
             divs: bool = True, max_d: int = 3):
    """Random programs of ``min_ops..max_ops`` ops over random slots, kept inside their bounds.

    Every slot gets a declared bound; each generated op is scaled so that its worst-case
    output (from the declared bounds of what it reads) stays within the bound of what it
    writes. That invariant is inductive, so it holds inside loops too, and the programs
    never leave the range the approximation constants support. Divisors are written by
    ``aff`` ops with a dominant bias, so ``|c|`` stays away from 0.
    """
    d = draw(st.integers(1, max_d)) if d is None else d
    p = Program(d, x_bound=10.0, y_bound=10.0, name="random")
    bounds = {"x": 10.0, "y": 10.0, "one": 1.0, "is_y": 1.0}
    sizes = {"x": d, "y": 1, "one": 1, "is_y": 1}
    min_abs = {"one": 1.0}  # guaranteed lower bound of |value| (for divisors)
    written = set(bounds)
    pool = []
    for i, k in enumerate(_POOL_SIZES + (d,)):
        name = f"s{i}"
        bnd = draw(st.sampled_from([1.0, 2.0, 5.0, 10.0]))
        p.slot(name, k, bound=bnd)
        bounds[name], sizes[name] = bnd, k
        pool.append(name)
    n_ops = draw(st.integers(min_ops, max_ops))
    loop_span = None
    if loops and n_ops >= 2 and draw(st.booleans()):
        a = draw(st.integers(0, n_ops - 1))
        b = draw(st.integers(a + 1, n_ops))
        loop_span = (a, b, draw(st.sampled_from(["examples", 2])))
    ctx = None
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def readable(size=None):
        names = sorted(n for n in written if size is None or sizes[n] == size)
        return names

    for i in range(n_ops):
        if loop_span and i == loop_span[0]:
            ctx = p.loop(loop_span[2])
            ctx.__enter__()
        if loop_span and i == loop_span[1] and ctx is not None:
            ctx.__exit__(None, None, None)
            ctx = None
        kinds = ["mov", "aff", "mul"] + (["div"] if divs else [])
        kind = draw(st.sampled_from(kinds))
        dst = draw(st.sampled_from(pool))
        k = sizes[dst]
        if dst in min_abs:  # divisor slots keep their guarantee: only divisor-style affs write them
            kind = "aff"
        if kind == "mov":
            srcs = [s for s in readable(k) if bounds[s] <= bounds[dst] and s not in ("one", "is_y", "pos")]
            if srcs:
                src = draw(st.sampled_from(srcs))
                how = draw(st.sampled_from(["offset", "position", "mean", "mean_x", "mean_y"]))
                if how == "offset":
                    p.mov(src, dst, offset=draw(st.integers(0, 3)))
                elif how == "position":
                    p.mov(src, dst, position=draw(st.integers(0, 4)))
                else:
                    p.mov(src, dst, mean={"mean": True, "mean_x": "x", "mean_y": "y"}[how])
                written.add(dst)
                continue
            kind = "aff"
        if kind == "div":
            divisors = [s for s in readable(1) if min_abs.get(s, 0.0) >= 0.5 and s != dst]
            srcs = [s for s in readable(k) if s != dst]
            if divisors and srcs:
                c = draw(st.sampled_from(divisors))
                src = draw(st.sampled_from(srcs))
                if bounds[src] / min_abs[c] <= bounds[dst]:
                    p.div(src, c, dst)
                    written.add(dst)
                    continue
            kind = "aff"
        if kind == "mul":
            cands = []
            for a_ in (1, 2, 3):
                for c_ in (1, 2, 3):
                    if a_ * c_ != k:
                        continue
                    for b_ in (1, 2, 3):
                        L = readable(a_ * b_)
                        R = readable(b_ * c_)
                        if L and R:
                            cands.append((a_, b_, c_))
            if cands:
                a_, b_, c_ = draw(st.sampled_from(cands))
                lhs = draw(st.sampled_from(readable(a_ * b_)))
                rhs = draw(st.sampled_from(readable(b_ * c_)))
                worst = b_ * bounds[lhs] * bounds[rhs]
                coef = float(rng.uniform(0.2, 1.0)) * bounds[dst] / worst * rng.choice([-1.0, 1.0])
                plus = None
                if draw(st.booleans()):
                    s = draw(st.sampled_from(readable()))
                    room = bounds[dst] - abs(coef) * worst
                    W = rng.uniform(-1, 1, (k, sizes[s]))
                    W *= 0.9 * room / max(1e-12, np.abs(W).sum(1).max() * bounds[s])
                    plus = {s: W}
                p.mul(lhs, rhs, dst, shape=(a_, b_, c_), coef=coef, plus=plus)
                written.add(dst)
                continue
        # aff: a random affine map scaled into the destination's bound
        srcs = readable()
        n_terms = draw(st.integers(0, 2))
        terms = {}
        for s in draw(st.lists(st.sampled_from(srcs), min_size=n_terms, max_size=n_terms, unique=True)):
            terms[s] = rng.uniform(-1, 1, (k, sizes[s]))
        make_divisor = dst in min_abs or (k == 1 and draw(st.booleans()))
        bias = rng.uniform(-1, 1, k)
        if make_divisor:  # |c| >= bias/2: a safe divisor
            bias = np.full(k, rng.choice([-1.0, 1.0]) * bounds[dst] * 0.75)
            budget = 0.95 * 0.25 * bounds[dst]
        else:
            budget = bounds[dst] * 0.9
            bias *= 0.1 * bounds[dst]
            budget -= np.abs(bias).max()
        worst = sum(np.abs(W).sum(1).max() * bounds[s] for s, W in terms.items())
        if worst > 0:
            terms = {s: W * (budget / worst) for s, W in terms.items()}
        p.aff(dst, terms, bias=bias)
        written.add(dst)
        if make_divisor:
            min_abs[dst] = 0.5 * bounds[dst]
    if ctx is not None:
        ctx.__exit__(None, None, None)
    out = [s for s in readable(1) if s in pool]
    if not out:
        p.aff("s0", {"y": 0.09 * bounds["s0"]})
        out = ["s0"]
    p.readout(draw(st.sampled_from(out)), columns=draw(st.sampled_from(["x", "all"])))
    return p


# ---------------------------------------------------------------------- comparison
class Mismatch(AssertionError):
    """A compiled model disagrees with the interpreter; the message says where."""


def replay_schedule(model: ConstructedTransformer, tokens, *, check: bool = True) -> Trace:
    """Run the model's program in the interpreter, but in the model's schedule: one group per sublayer.

    The ops of one sublayer run in parallel (all read the sublayer's input), in the order the
    model runs its layers (loops unrolled); ``trace.snapshots[2l]`` is ``H`` after the
    attention of layer ``l``, ``[2l + 1]`` after its MLP. A ``div`` reads its divisor where
    the model does: at the input of its layer's attention, which wrote the ``pair`` from it
    (Lemma 8). Exact float64 arithmetic, so any difference from the model is approximation
    error and any difference from :func:`~iclconstruct.lang.interpreter.interpret` is the
    schedule changing the program's meaning.
    """
    prog, lay, constants = model.program, model.layout, model.constants
    tok = tokens.detach().cpu().numpy() if hasattr(tokens, "detach") else np.asarray(tokens)
    H = embed_reference(prog, tok, max_len=model.max_len, check=check)
    snaps = []
    for l, (_, _, plan) in enumerate(model.schedule.unrolled(H.shape[1])):
        H_layer = H.copy()
        for where, ops in (("attention", plan.attn_ops), ("MLP", plan.mlp_ops)):
            tag = f"layer {l} {where}"
            H_in = H.copy()
            for op in ops:
                Hi = H_in.copy()
                if isinstance(op, Div):  # the divisor was read by this layer's attention
                    lay.view(Hi, op.divisor)[...] = lay.view(H_layer, op.divisor)
                if check:
                    check_op(op, Hi, lay, constants, tag, before=True)
                apply_op(op, Hi, lay)
                lay.view(H, op.writes())[...] = lay.view(Hi, op.writes())
            if check:
                for op in ops:
                    check_op(op, H, lay, constants, tag, before=False)
            snaps.append(H.copy())
    return Trace(H=H, output=readout(prog, H), layout=lay, snapshots=snaps)


def compare_with_interpreter(model: ConstructedTransformer, tokens, *, rtol: float = 1e-6,
                             atol: float = 1e-6) -> Optional[str]:
    """``None`` if the model matches the interpreter at every stage, else an explanation.

    Replays the model's schedule in the interpreter (:func:`replay_schedule`) and compares
    every user row of the residual stream after each attention and MLP sublayer with
    ``|model − ref| ≤ atol + rtol·|ref|`` (except the rows a div layer's attention clears,
    :attr:`LayerPlan.cleared`, which the replay writes only in the MLP); then compares the
    readout with a plain program-order interpretation (which checks the schedule itself).
    """
    prog = model.program
    lay = model.layout
    tok = tokens if isinstance(tokens, torch.Tensor) else torch.as_tensor(np.asarray(tokens))
    T = tok.shape[-2]
    trace = replay_schedule(model, tok)
    out, cache = model.run_with_cache(tok, names_filter=lambda n: n.endswith(("hook_resid_mid", "hook_resid_post")))
    user = np.array(lay.user_rows())
    labels = lay.row_labels()
    unrolled = model.schedule.unrolled(T)
    for i, ref in enumerate(trace.snapshots):
        l, where = divmod(i, 2)
        seg, li, plan = unrolled[l]
        got = cache[block_hook(l, "hook_resid_mid" if where == 0 else "hook_resid_post")].numpy()[..., : lay.size]
        g, r = got[..., user], ref[..., user]
        bad = np.abs(g - r) > atol + rtol * np.abs(r)
        if where == 0:  # a div layer clears its (non-accumulating) targets in attention
            bad[..., lay.mask(plan.cleared)[user]] = False
        if bad.any():
            b, t, j = np.argwhere(bad)[0]
            ops = plan.attn_ops if where == 0 else plan.mlp_ops
            return (
                f"layer {l} ({'attention' if where == 0 else 'MLP'} sublayer; segment {seg}, layer {li} of it), "
                f"row {user[j]} = {labels[user[j]]}, batch {b}, column {t}: model {g[b, t, j]:.10g} vs interpreter "
                f"{r[b, t, j]:.10g} (|diff| {abs(g[b, t, j] - r[b, t, j]):.3g}, {int(bad.sum())} entries off). "
                f"Ops in this sublayer: {', '.join(op.describe() for op in ops) or 'none (row should be unchanged)'}"
            )
    plain = interpret(prog, tok, constants=model.constants, max_len=model.max_len)
    o = out.numpy()
    bad = np.abs(o - plain.output) > atol + rtol * np.abs(plain.output)
    if bad.any():
        b, t = np.argwhere(bad)[0]
        return (f"readout differs from program-order interpretation at batch {b}, column {t}: "
                f"model {o[b, t]:.10g} vs {plain.output[b, t]:.10g} — the schedule changed the program's meaning")
    return None


def assert_matches_interpreter(model: ConstructedTransformer, tokens, *, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """Raise :class:`Mismatch` (an ``AssertionError``) naming layer, slot and ops if the model
    and the interpreter disagree beyond ``atol + rtol·|ref|`` anywhere."""
    msg = compare_with_interpreter(model, tokens, rtol=rtol, atol=atol)
    if msg is not None:
        raise Mismatch(f"{msg}\nprogram:\n{model.program.listing()}\nschedule:\n{model.summary()}")
