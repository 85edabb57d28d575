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
from .lang.guards import InputGuard
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
    "shifted_tasks",
    "frontend_algorithms",
    "random_algorithm",
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
    """Tokens ``(B, 2n+1, d+1)`` in the paper layout, within the program's input bounds.

    At most ``max_n`` examples, and at most ``program.meta['max_n']`` where the program
    records one (:func:`programs` does: its ``count``/``sum`` bounds assume it)."""
    lay = program.layout
    b = min(lay["x"].bound, lay["y"].bound)
    max_n = min(max_n, int(program.meta.get("max_n", max_n)))  # programs() sizes count/sum for its max_n
    return regression_tasks(d=lay.d, n=n, bound=b, max_n=max_n, max_batch=max_batch).map(lambda t: encode(*t))


# ---------------------------------------------------------------------- random programs
_POOL_SIZES = (1, 1, 2, 2, 3, 4, 6, 9)


@st.composite
def programs(draw, d: Optional[int] = None, min_ops: int = 1, max_ops: int = 12, loops: bool = True,
             divs: bool = True, max_d: int = 3, frees: bool = True, reductions: bool = True,
             guards: bool = True, max_n: int = 6):
    """Random programs of ``min_ops..max_ops`` ops over random slots, kept inside their bounds.

    Covers every documented feature of :class:`~iclconstruct.Program`: the four primitives
    (``mul`` with ``plus=``/``bias=``, ``div`` with ``coef=``, ``accumulate=True`` and a declared
    ``min_abs=``), every
    read kind of ``mov`` (``offset``, ``position``, ``mean`` over all, x̃ or ỹ columns), the
    reductions over the examples (``count``, and ``sum`` with and without ``count=``), reads
    of the readable system slots ``pos``, ``one`` and ``is_y``, slots placed with ``at=``
    (with gaps of unused rows), slots freed and their rows reused, loops repeated
    ``'examples'`` times (zero times on inputs without a complete example) or a fixed
    number of times, input guards (``program.guard``), a fixed residual ``width=``,
    non-default ``x_bound``/``y_bound``, and both readout column sets.

    Every slot gets a declared bound; each generated op is scaled so that its worst-case
    output (from the declared bounds of what it reads) stays within the bound of what it
    writes. That invariant is inductive, so it holds inside loops too, and the programs
    never leave the range the approximation constants support. ``count`` and ``sum`` grow
    with the number of examples: they are drawn for inputs of at most ``max_n`` examples
    (``count`` into slots whose bound is at least ``max_n``, ``sum`` of a slot bounded by
    ``b`` into slots bounded by at least ``max_n·b``, sometimes with a ``scale`` of magnitude
    ≤ 1); ``program.meta['max_n']`` records it and :func:`tokens_for` keeps to it. Divisors
    are written by ``aff`` ops with a dominant bias, so ``|c|`` stays away from 0; a slot
    counts as a divisor only once it is written by code that surely runs (not only inside a
    loop that may run zero times). Guards never refuse an in-range input (their limit exceeds
    the largest ``‖x‖²`` the bounds allow).
    """
    d = draw(st.integers(1, max_d)) if d is None else d
    xb, yb = draw(st.sampled_from([(10.0, 10.0), (10.0, 10.0), (3.0, 10.0), (10.0, 2.0)]))
    width = None
    if draw(st.integers(0, 4)) == 0:  # a fixed residual width, wide enough for every slot drawn below
        # system and input rows, every pool slot, a gap of at most 2 rows before each (reuse adds none)
        width = Program(d).layout.size + sum(_POOL_SIZES) + d + 2 * (len(_POOL_SIZES) + 1) + draw(st.integers(0, 3))
    p = Program(d, x_bound=xb, y_bound=yb, width=width, name="random")
    p.meta = {"strategy": "iclconstruct.testing.programs", "max_n": int(max_n)}
    bounds = {"x": xb, "y": yb, "one": 1.0, "is_y": 1.0, "pos": 1.0}
    sizes = {"x": d, "y": 1, "one": 1, "is_y": 1, "pos": 2}
    min_abs = {"one": 1.0}  # guaranteed lower bound of |value| (for divisors)
    written = set(bounds)
    counts = set()  # slots whose last writer is count() (what sum(count=) may use)
    pool = []
    n_fresh = [0]

    def new_slot(k, at=None):
        name = f"s{n_fresh[0]}"
        n_fresh[0] += 1
        bnd = draw(st.sampled_from([1.0, 2.0, 5.0, 10.0, 0.0] + ([0.0] if k == 1 else [])))
        if bnd == 0.0:  # a wide slot: room for a count or a sum over max_n examples
            bnd = float(max_n) * draw(st.sampled_from([1.0, 2.0, 5.0, 10.0]))
        p.slot(name, k, bound=bnd, at=at)
        bounds[name], sizes[name] = bnd, k
        return name

    for k in _POOL_SIZES + (d,):
        at = None
        if draw(st.integers(0, 3)) == 0:  # pin the slot with at=, leaving a gap of unused rows
            at = p.layout.size + draw(st.integers(0, 2))
        pool.append(new_slot(k, at))
    if guards and draw(st.integers(0, 3)) == 0:  # a guard no in-range input trips
        scale, shift = float(draw(st.sampled_from([0.01, 0.5, 2.0]))), float(draw(st.sampled_from([0.0, 1.0])))
        limit = 1.5 * scale * (d * xb * xb + shift)
        p.guard(InputGuard(scale=scale, shift=shift, limit=limit, expr="random guard", reason="generated",
                           param="scale", value=scale))
    n_ops = draw(st.integers(min_ops, max_ops))
    loop_span = None
    if loops and n_ops >= 2 and draw(st.booleans()):
        a = draw(st.integers(0, n_ops - 1))
        b = draw(st.integers(a + 1, n_ops))
        loop_span = (a, b, draw(st.sampled_from(["examples", "examples", 1, 2, 3])))
    ctx = None
    body_written = set()  # slots the open loop body has written so far
    body_counts = set()   # count= slots a sum of the open body reads before the body writes them
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def readable(size=None):
        names = sorted(n for n in written if size is None or sizes[n] == size)
        return names

    def in_loop() -> bool:
        return ctx is not None

    def sure() -> bool:  # code that runs at least once on every input
        return ctx is None or loop_span[2] != "examples"

    def wrote(dst, count=False):
        written.add(dst)
        body_written.add(dst)
        (counts.add if count else counts.discard)(dst)

    def affine_terms(k, budget, exclude=()):
        srcs = [s for s in readable() if s not in exclude]
        n_terms = draw(st.integers(0, 2))
        terms = {}
        for s in draw(st.lists(st.sampled_from(srcs), min_size=min(n_terms, len(srcs)),
                               max_size=min(n_terms, len(srcs)), unique=True)):
            terms[s] = rng.uniform(-1, 1, (k, sizes[s]))
        worst = sum(np.abs(W).sum(1).max() * bounds[s] for s, W in terms.items())
        if worst > 0:
            terms = {s: W * (budget / worst) for s, W in terms.items()}
        return terms

    for i in range(n_ops):
        if loop_span and i == loop_span[0]:
            ctx = p.loop(loop_span[2])
            ctx.__enter__()
            body_written, body_counts = set(), set()
        if loop_span and i == loop_span[1] and ctx is not None:
            ctx.__exit__(None, None, None)
            ctx = None
        if frees and not in_loop() and draw(st.integers(0, 5)) == 0:
            # free a slot and reuse its rows with at= (the free/reuse path of the layout)
            old = draw(st.sampled_from(pool))
            p.free(old)
            written.discard(old)
            counts.discard(old)
            min_abs.pop(old, None)
            pool[pool.index(old)] = new_slot(sizes[old], at=p.layout.first_row(old))
        kinds = ["mov", "aff", "mul"] + (["div"] if divs else []) + (["count", "sum", "sum"] if reductions else [])
        kind = draw(st.sampled_from(kinds))
        dst = draw(st.sampled_from(pool))
        k = sizes[dst]
        if dst in min_abs:  # divisor slots keep their guarantee: only divisor-style affs write them
            kind = "aff"
        if dst in body_counts:  # an earlier sum of this body reads it as its count: keep it a count
            kind = "count"
        elif kind in ("count", "sum"):  # a destination these ops can write (wide enough), if any
            def fits(s):
                if s in min_abs or s in body_counts:
                    return False
                if kind == "count":
                    return sizes[s] == 1 and bounds[s] >= max_n
                return any(r != s and max_n * bounds[r] <= bounds[s] for r in readable(sizes[s]))
            cands = [s for s in pool if fits(s)]
            if cands:
                dst = draw(st.sampled_from(cands))
                k = sizes[dst]
        if kind == "count":
            if k == 1 and bounds[dst] >= max_n and dst not in min_abs:
                p.count(dst)
                wrote(dst, count=True)
                continue
            kind = "aff"
        if kind == "sum":
            srcs = [s for s in readable(k) if s != dst and max_n * bounds[s] <= bounds[dst]]
            if srcs:
                src = draw(st.sampled_from(srcs))
                cnt = None
                if draw(st.booleans()):  # multiply by a count slot (written here first if there is none)
                    cs = sorted(counts - {dst})
                    fresh = [s for s in pool if s != dst and s != src and sizes[s] == 1 and bounds[s] >= max_n
                             and s not in min_abs]
                    if cs:
                        cnt = draw(st.sampled_from(cs))
                    elif fresh:
                        cnt = draw(st.sampled_from(fresh))
                        p.count(cnt)
                        wrote(cnt, count=True)
                # sometimes a scaled sum (|scale| ≤ 1 keeps max_n·bound(src) ≤ bound(dst) sufficient)
                scale = draw(st.sampled_from([1.0, 1.0, 1.0 / max_n, -0.5]))
                p.sum(src, dst, count=cnt, scale=scale)
                if in_loop() and cnt is not None and cnt not in body_written:
                    body_counts.add(cnt)
                wrote(dst)
                continue
            kind = "aff"
        if kind == "mov":
            srcs = [s for s in readable(k) if bounds[s] <= bounds[dst]]
            if srcs:
                src = draw(st.sampled_from(srcs))
                how = draw(st.sampled_from(["offset", "position", "mean", "mean_x", "mean_y"]))
                if how == "offset":
                    p.mov(src, dst, offset=draw(st.integers(0, 3)))
                elif how == "position":
                    p.mov(src, dst, position=draw(st.integers(0, 8)))
                else:
                    p.mov(src, dst, mean={"mean": True, "mean_x": "x", "mean_y": "y"}[how])
                wrote(dst)
                continue
            kind = "aff"
        if kind == "div":
            divisors = [s for s in readable(1) if min_abs.get(s, 0.0) >= 0.5 and s != dst]
            srcs = [s for s in readable(k) if s != dst]
            if divisors and srcs:
                c = draw(st.sampled_from(divisors))
                src = draw(st.sampled_from(srcs))
                room = bounds[dst] / (bounds[src] / min_abs[c])
                # half the divisions declare the divisor's guaranteed minimum (Div.min_abs), a true bound
                declared = float(min_abs[c]) if rng.random() < 0.5 else 0.0
                if draw(st.booleans()):  # accumulate: dst ← aff(...) (≤ bound/2), then dst += coef·src/|c|
                    p.aff(dst, affine_terms(k, 0.45 * bounds[dst], exclude=(dst,)), bias=None)
                    wrote(dst)
                    coef = float(rng.uniform(0.2, 0.45)) * room * rng.choice([-1.0, 1.0])
                    p.div(src, c, dst, coef=coef, accumulate=True, min_abs=declared)
                    continue
                if room >= 1.0 or draw(st.booleans()):
                    coef = 1.0 if room >= 1.0 and draw(st.booleans()) else float(rng.uniform(0.2, 0.9)) * min(room, 1.0)
                    p.div(src, c, dst, coef=coef, min_abs=declared)
                    wrote(dst)
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
                room = bounds[dst] - abs(coef) * worst
                plus, bias = None, None
                if draw(st.booleans()):
                    s = draw(st.sampled_from(readable()))
                    W = rng.uniform(-1, 1, (k, sizes[s]))
                    W *= 0.6 * room / max(1e-12, np.abs(W).sum(1).max() * bounds[s])
                    plus = {s: W}
                if draw(st.booleans()):
                    bias = rng.uniform(-0.3, 0.3, k) * room
                p.mul(lhs, rhs, dst, shape=(a_, b_, c_), coef=coef, plus=plus, bias=bias)
                wrote(dst)
                continue
        # aff: a random affine map scaled into the destination's bound
        make_divisor = dst in min_abs or (k == 1 and draw(st.booleans()))
        bias = rng.uniform(-1, 1, k)
        if make_divisor:  # |c| >= bias/2: a safe divisor
            bias = np.full(k, rng.choice([-1.0, 1.0]) * bounds[dst] * 0.75)
            budget = 0.95 * 0.25 * bounds[dst]
        else:
            budget = bounds[dst] * 0.9
            bias *= 0.1 * bounds[dst]
            budget -= np.abs(bias).max()
        p.aff(dst, affine_terms(k, budget), bias=bias)
        wrote(dst)
        if make_divisor and sure():
            min_abs[dst] = 0.5 * bounds[dst]
    if ctx is not None:
        ctx.__exit__(None, None, None)
    out = [s for s in readable(1) if s in pool]
    if not out:
        p.aff(pool[0], {"y": 0.09 * bounds[pool[0]]})
        out = [pool[0]]
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
                for name in op.prestage_reads():  # read by this layer's attention (div: divisor, sum: src)
                    lay.view(Hi, name)[...] = lay.view(H_layer, name)
                if check:
                    check_op(op, Hi, lay, constants, tag, before=True)
                apply_op(op, Hi, lay)
                lay.view(H, op.writes())[...] = lay.view(Hi, op.writes())
            if check:
                for op in ops:
                    check_op(op, H, lay, constants, tag, before=False, program=prog)
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


@st.composite
def shifted_tasks(draw, d: int, max_n: int = 64, min_n: int = 0, x_bound: float = 6.0, y_bound: float = 30.0):
    """One task ``(X, y, x_query)`` (unbatched) that is *not* ``N(0, I)``: anisotropic, shifted, noisy.

    ``x = shift + diag(scales)·R·z`` with log-uniform scales in ``[0.1, 3]``, a random rotation
    ``R``, a shift of up to ``±2.5`` per coordinate, ``y = wᵀx + noise``; everything rescaled
    to stay within ``x_bound`` / ``y_bound``.
    """
    n = draw(st.integers(min_n, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["isotropic", "anisotropic", "shifted", "both"]))
    scales = np.exp(rng.uniform(np.log(0.1), np.log(3.0), d)) if kind in ("anisotropic", "both") else np.ones(d)
    shift = rng.uniform(-2.5, 2.5, d) if kind in ("shifted", "both") else np.zeros(d)
    R = np.linalg.qr(rng.standard_normal((d, d)))[0]
    Z = rng.standard_normal((n + 1, d))
    Xall = shift + (Z * scales) @ R.T
    Xall *= min(1.0, 0.999 * x_bound / max(np.abs(Xall).max(initial=0.0), 1e-12))
    w = rng.standard_normal(d)
    yall = Xall @ w + draw(st.sampled_from([0.0, 0.1, 0.5])) * rng.standard_normal(n + 1)
    yall *= min(1.0, 0.999 * y_bound / max(np.abs(yall).max(initial=0.0), 1e-12))
    return Xall[:n], yall[:n], Xall[n]


@st.composite
def frontend_algorithms(draw, max_d: int = 3, max_steps: int = 8, loops: bool = True, max_n: int = 8):
    """Random front-end algorithms (:func:`iclconstruct.algorithm`): random expression DAGs over
    ``ctx.x``, ``ctx.y``, constants, ``ctx.sum``/``mean``/``count``, products, transposes,
    divisions by provably positive values, unrolled Python loops and ``ctx.examples()`` loops.

    Every value is kept within ``±50`` by interval analysis (results that could grow are
    rescaled), so the algorithms compile without ``ctx.bound``; loops are contractions, whose
    bounds the front end finds by itself. Inputs: ``|x_i| ≤ 2``, ``|y| ≤ 2``.
    """
    d = draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**32 - 1))
    n_steps = draw(st.integers(1, max_steps))
    use_loop = loops and draw(st.booleans())
    return random_algorithm(d, seed, n_steps, use_loop, max_n)


def random_algorithm(d: int, seed: int, n_steps: int, use_loop: bool, max_n: int = 8):
    """The algorithm :func:`frontend_algorithms` draws for these choices (to replay a failure by its name)."""
    from .frontend import algorithm

    def fn(ctx):
        rng = np.random.default_rng(seed)
        x, y = ctx.x, ctx.y
        ex = [x, y, y * x, x.outer(x), x @ x]                   # per-example terms
        agg = []                                                # aggregates over the examples

        def tame(e, cap=50.0):
            return e * (cap / e.bound) if e.bound > cap else e

        def pick(pool, shape=None):
            cands = [e for e in pool if shape is None or e.shape == shape]
            return cands[rng.integers(len(cands))] if cands else None

        for _ in range(n_steps):
            k = rng.integers(9)
            if k == 0 or not agg:
                e = pick(ex)
                r = rng.random()  # a sum, a sum in units of 1/max_n (scale=), or a mean
                agg.append(tame(ctx.sum(e) if r < 0.35 else ctx.sum(e, scale=1.0 / max_n) if r < 0.5 else ctx.mean(e)))
            elif k == 1:
                a = pick(ex)
                b = pick(ex, a.shape)
                ex.append(tame(float(rng.uniform(-1, 1)) * a + b))
            elif k == 2:
                agg.append(ctx.count() * (1.0 / max_n))
            elif k == 3:
                a = pick(agg)
                b = pick(agg, a.shape)
                agg.append(tame(a + float(rng.uniform(-1, 1)) * b))
            elif k == 4:  # a matrix or vector product of aggregates (or with a constant)
                a = pick(agg)
                if a.shape == ():
                    b = pick(agg)
                    agg.append(tame(a * b))
                    continue
                m = a.shape[-1]
                b = pick(agg, (m,)) if rng.random() < 0.7 else None
                b = ctx.const(rng.uniform(-1, 1, m)) if b is None else b
                agg.append(tame(a @ b))
            elif k == 5:  # division by a provably positive value
                a = pick(agg)
                c = 1.0 + ctx.sum(x @ x) * (1.0 / max_n) if rng.random() < 0.5 else 1.0 + ctx.count() * 0.1
                agg.append(tame(a / c))
            elif k == 6:  # an unrolled Python loop: a few contraction steps
                v = pick(agg, (d,))
                M = pick(agg, (d, d))
                if v is None or M is None:
                    continue
                for _ in range(int(rng.integers(1, 3))):
                    v = tame(v - (0.5 / M.bound / d) * (M @ v), 20.0)
                agg.append(v)
            elif k == 7:
                a = pick(agg)
                agg.append(a.T if len(a.shape) == 2 else tame(a * a))
            else:  # elementwise / outer products of aggregates
                a = pick(agg, (d,))
                if a is not None:
                    agg.append(tame(a.outer(a) if rng.random() < 0.5 else a * pick(agg, (d,))))
        out = pick(agg, (d,))
        out = ctx.sum(y * x) * 0.1 if out is None else out
        if use_loop:
            w = ctx.const(rng.uniform(-0.5, 0.5, d))
            a_, b_ = float(rng.uniform(-0.8, 0.8)), float(rng.uniform(-0.5, 0.5))
            for xe, ye in ctx.examples():
                w = a_ * w + b_ * (ye * xe) + 0.01 * (xe @ w) * xe  # a contraction: |a_| + 0.04·d < 1
            out = out + w
        if rng.random() < 0.5:
            s = pick(agg, ())
            return out @ ctx.query + (0.0 if s is None else s)
        return out

    return algorithm(fn, d=d, x_bound=2.0, y_bound=2.0, max_n=max_n,
                     name=f"random_algorithm({d}, {seed}, {n_steps}, {use_loop}, {max_n})")
