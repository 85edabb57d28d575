"""Lowering: the traced expression DAG → a :class:`~iclconstruct.lang.program.Program`.

Three passes do what a user of ``Program`` does by hand:

1. **Linear folding.** Sums, scalings, transposes and products with a constant are linear
   maps; they never get a slot of their own but become the ``terms``/``plus`` weights of the
   op that consumes them. A product of two traced values (Lemma 4) is emitted as a ``mul``
   whose ``coef``/``plus``/``bias`` absorb the linear combination around it, so
   ``w − η·(S @ w − b)`` is *one* MLP.
2. **Instruction selection.** ``ctx.x`` is the previous column's input (``mov``, offset 1),
   ``ctx.sum`` the kit's ``sum``, ``ctx.mean`` the averaging read over the ỹ columns,
   ``ctx.count`` the kit's ``count``, ``/`` a ``div`` (Lemma 8), ``ctx.examples()`` a
   weight-tied ``loop('examples')`` on the wavefront schedule (``circuits/common.py``).
3. **Slot allocation by liveness.** Every value gets a slot whose bound is its interval
   bound; a slot is freed right after its last reader, so later values reuse its rows
   (loop state slots are kept). Slots are named by ``ctx.name`` where the user gave one.

Loops (``lower_loop``): a state updated as ``state + k·(a / c)`` is updated in place (the
division accumulates into it); a state whose update is not the identity at x̃ columns has
only its non-vanishing terms gated by ``is_y`` (``gated_update``).

The packing into layers is the kit's scheduler (Lemma 7).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from ..lang.program import Program
from .expr import EXAMPLE, PREFIX, STATE, Expr, FrontendError
from .semantics import apply, at_empty_example

__all__ = ["lower", "MAX_BOUND"]

#: largest slot bound the front end accepts: beyond it the product trick's absolute error
#: (``≈ 2e-10·s_x·s_y``, ``Constants.product_error``) is no longer small
MAX_BOUND = 1e6

SYSTEM = {"x", "y", "is_y", "one"}

Form = Tuple[Dict[Tuple[str, object], np.ndarray], np.ndarray]


class _Lowering:
    def __init__(self, ctx, out: Expr, gated: bool, max_bound: float = MAX_BOUND, no_inplace=frozenset()):
        self.ctx = ctx
        self.max_bound = max_bound
        self.no_inplace = no_inplace  # loop variables whose state may not be updated in place
        self.inplace: Dict[str, int] = {}  # state slot updated in place -> its loop variable (checked in program())
        self.used_names: set = set()
        self.gated = gated
        self.seg: Dict[str, list] = {"pre": [], "body": [], "post": []}
        self.sizes: Dict[str, int] = {}
        self.bounds: Dict[str, float] = {}
        self.slot_of: Dict[int, str] = {}
        self.prod_slot: Dict[int, str] = {}
        self.forms: Dict[int, Form] = {}
        self.loop_done = False
        self.n = 0
        self.out = out
        self.keep: set = set()  # slots never freed (see lower())
        self.advice: Dict[str, str] = {}  # slot -> what to change when its ctx.bound is exceeded

    # ------------------------------------------------------------------ helpers
    def target(self, node: Expr) -> str:
        if node.level == STATE:
            return "body"
        if node.level == PREFIX and node.op not in ("sum", "mean", "count"):
            return "post"
        return "pre"

    def new_slot(self, kind: str, node: Optional[Expr], size: int, bound: float, name: Optional[str] = None) -> str:
        self.n += 1
        line = ""
        if node is not None and node.where:
            line = "_L" + node.where.split(":")[-1].split(" ")[0]
        if name is None and node is not None:
            name = node.user_name
        if name is not None:  # ctx.name: the user's name, made unique
            base, k = name, 1
            while name in self.used_names:
                k += 1
                name = f"{base}{k}"
            self.used_names.add(name)
        else:
            name = kind if kind == "examples_seen" else f"{kind}{self.n}{line if line[2:].isdigit() else ''}"
        if not np.isfinite(bound) or bound > self.max_bound:
            what = node.describe() if node is not None else kind
            raise FrontendError(
                f"{what} is unbounded for the compiler: interval analysis from x_bound, y_bound and max_n gives "
                f"|value| <= {bound:.4g} (> {self.max_bound:g}, where the GeLU product error stops being small). "
                "Tighten it with ctx.bound(expr, value) — loop iterates usually need one — or lower the bounds")
        self.sizes[name] = size
        self.bounds[name] = max(float(bound), 1e-6)
        note = getattr(node, "bound_note", None)
        if note is not None:
            self.advice[name] = _advice(name, *note)
        return name

    def emit(self, seg: str, *instr) -> None:
        self.seg[seg].append(instr)

    # ------------------------------------------------------------------ forms
    def form(self, node: Expr) -> Form:
        if node.id in self.slot_of:
            s = self.slot_of[node.id]
            return {("s", s): np.eye(node.size)}, np.zeros(node.size)
        if node.id in self.forms:
            return self.forms[node.id]
        op = node.op
        k = node.size
        if op == "const":
            f = ({}, np.asarray(node.param, dtype=np.float64).reshape(-1).copy())
        elif op == "add":
            f = _combine(self.form(node.args[0]), self.form(node.args[1]))
        elif op == "scale":
            t, b = self.form(node.args[0])
            f = ({key: node.param * W for key, W in t.items()}, node.param * b)
        elif op == "transpose":
            n0, m0 = node.args[0].shape
            P = np.zeros((k, k))
            for i in range(n0):
                for j in range(m0):
                    P[j * n0 + i, i * m0 + j] = 1.0
            t, b = self.form(node.args[0])
            f = ({key: P @ W for key, W in t.items()}, P @ b)
        elif op in ("mul", "matmul", "outer") and any(a.op == "const" for a in node.args):
            ci = 0 if node.args[0].op == "const" else 1
            other = node.args[1 - ci]
            J = np.zeros((k, other.size))
            cval = np.asarray(node.args[ci].param, dtype=np.float64)[None]
            for j in range(other.size):
                e = np.zeros(other.size)
                e[j] = 1.0
                e = e.reshape((1,) + other.shape)
                vals = [cval, e] if ci == 0 else [e, cval]
                J[:, j] = apply(node, vals).reshape(-1)
            t, b = self.form(other)
            f = ({key: J @ W for key, W in t.items()}, J @ b)
        elif op in ("mul", "matmul", "outer"):
            spec = _mul_spec(node)
            f = ({("p", node.id): spec[4]}, np.zeros(k))
        elif op == "gate" and node.args[0].op == "const":  # is_y·c: a linear term in the is_y flag
            f = ({("s", "is_y"): np.asarray(node.args[0].param, dtype=np.float64).reshape(-1, 1)}, np.zeros(k))
        else:  # leaves: the value lives in a slot of its own
            s = self.leaf(node)
            f = ({("s", s): np.eye(k)}, np.zeros(k))
        f = ({key: W for key, W in f[0].items() if np.any(W)}, f[1])
        self.forms[node.id] = f
        return f

    # ------------------------------------------------------------------ products
    def emit_product(self, pid: int, seg: str, dst: Optional[str] = None, coef: float = 1.0, plus=None,
                     bias=None) -> str:
        node = self.ctx.nodes[pid]
        lhs_node, rhs_node, shape, natural, _ = _mul_spec(node)
        lhs, cl = self.operand(lhs_node)
        rhs, cr = self.operand(rhs_node)
        coef = coef * cl * cr
        if dst is None:
            bound = node.bound if natural is None else natural
            dst = self.new_slot("mul", node, shape[0] * shape[2], bound)
            self.prod_slot[pid] = dst
        self.emit(seg, "mul", lhs, rhs, dst, shape, coef, plus or [], bias)
        return dst

    def operand(self, node: Expr) -> Tuple[str, float]:
        """``(slot, c)`` with ``node = c·slot``: a scaled slot needs no op of its own (the mul's coef absorbs c).

        A value named with ``ctx.name`` gets a slot of its own instead."""
        if node.id not in self.slot_of and node.user_name is None:
            terms, bias = self.form(node)
            if len(terms) == 1 and not bias.any():
                (kind, key), W = next(iter(terms.items()))
                if kind == "p" and key in self.prod_slot:
                    kind, key = "s", self.prod_slot[key]
                c = W[0, 0] if W.shape == (node.size, node.size) else 0.0
                if kind == "s" and c != 0.0 and np.array_equal(W, c * np.eye(node.size)):
                    return key, float(c)
        return self.materialize(node), 1.0

    # ------------------------------------------------------------------ materialize
    def materialize(self, node: Expr, force_new: bool = False, into: Optional[str] = None) -> str:
        """A slot holding ``node``'s value (emitting ops as needed); ``into``: write that slot."""
        if into is not None:
            force_new = True
            if node.id in self.slot_of:
                self.emit(self.target(node), "aff", into, [(self.slot_of[node.id], np.eye(node.size))],
                          np.zeros(node.size))
                return into
        if node.id in self.slot_of and not force_new:
            return self.slot_of[node.id]
        terms, bias = self.form(node)
        seg = self.target(node)
        # products already emitted are plain slots now
        resolved = {}
        for (kind, key), W in terms.items():
            if kind == "p" and key in self.prod_slot:
                kind, key = "s", self.prod_slot[key]
            resolved[(kind, key)] = resolved.get((kind, key), 0) + W
        terms = resolved
        if not force_new and not bias.any() and len(terms) == 1:
            (kind, key), W = next(iter(terms.items()))
            if kind == "s" and W.shape == (node.size, node.size) and np.array_equal(W, np.eye(node.size)):
                self.slot_of[node.id] = key
                return key
        pend = [key for (kind, key), W in terms.items() if kind == "p"]
        fold = None
        for pid in reversed(pend):
            W = terms[("p", pid)]
            if W.shape[0] == W.shape[1] and np.allclose(W, W[0, 0] * np.eye(W.shape[0]), rtol=0, atol=0):
                fold = pid
                break
        for pid in pend:
            if pid != fold:
                s = self.emit_product(pid, seg)
                W = terms.pop(("p", pid))
                terms[("s", s)] = terms.get(("s", s), 0) + W
        dst = into or self.new_slot(node.op if node.op not in ("add", "scale") else "v", node, node.size, node.bound)
        plus = [(key, W) for (kind, key), W in terms.items() if kind == "s" and np.any(W)]
        b = bias if bias.any() else None
        if fold is not None:
            c = float(terms[("p", fold)][0, 0])
            self.emit_product(fold, seg, dst=dst, coef=c, plus=plus, bias=b)
        else:
            self.emit(seg, "aff", dst, plus, b if b is not None else np.zeros(node.size))
        self.slot_of[node.id] = dst
        return dst

    # ------------------------------------------------------------------ leaves
    def leaf(self, node: Expr) -> str:
        if node.id in self.slot_of:
            return self.slot_of[node.id]
        op = node.op
        seg = self.target(node)
        if op == "y":
            s = "y"
        elif op == "query":
            s = "x"
        elif op == "x":
            s = self.new_slot("x", node, node.size, node.bound)
            self.emit("pre", "mov", "x", s, {"offset": 1})
            if self.gated:  # 0 at x̃ columns (and at column 0, which reads itself)
                self.emit("pre", "mul", s, "is_y", s, (node.size, 1, 1), 1.0, [], None)
        elif op == "count":
            s = self.new_slot("examples_seen", None, 1, node.bound)
            self.emit("pre", "count", s)
        elif op == "sum":
            src = self.materialize(node.args[0])
            cnt = self.leaf(self.ctx.count())
            s = self.new_slot("sum", node, node.size, node.bound)
            self.emit("pre", "sum", src, s, cnt, node.param)
        elif op == "mean":
            src = self.materialize(node.args[0])
            s = self.new_slot("mean", node, node.size, node.bound)
            self.emit("pre", "mov", src, s, {"mean": "y"})
        elif op == "div":
            src = self.materialize(node.args[0])
            c = self.materialize(node.args[1])
            s = self.new_slot("div", node, node.size, node.bound)
            self.emit(seg, "div", src, c, s, 1.0, False, _min_abs(node.args[1]))
        elif op == "gate":  # is_y·value: the value at ỹ columns, 0 at x̃ columns
            src = self.materialize(node.args[0])
            s = self.new_slot("gated", node, node.size, node.bound, name=f"gated_{src}")
            self.emit(seg, "mul", src, "is_y", s, (node.size, 1, 1), 1.0, [], None)
        elif op == "state":
            self.lower_loop(node.ctx.loop)
            s = self.slot_of[node.id]
        elif op == "loop_out":
            self.lower_loop(node.param)
            st = self.state_slots[node.args[0].param]
            nm = node.user_name
            if nm is not None and nm == node.param.updates[node.args[0].param].user_name:
                nm = nm + "q"  # the loop variable's own name is its state slot's: the result is `wq`
            s = self.new_slot("out", node, node.size, node.bound, name=nm)
            self.emit("post", "mov", st, s, {"offset": 1})
        else:  # pragma: no cover
            raise FrontendError(f"cannot lower {node.describe()}")
        self.slot_of[node.id] = s
        return s

    def lower_loop(self, loop) -> None:
        """``ctx.examples()``: state slots, the weight-tied body on the wavefront schedule.

        A state whose update is ``state + k·(a / c)`` is updated in place: the slot is re-read
        from two columns back and the division accumulates into it (no ``prev`` slot, no
        extra layer). A state whose update is not the identity at x̃ columns is gated: only
        the terms that do not vanish at ``x = 0, y = 0`` (the state itself, constants) are
        multiplied by ``is_y``, in parallel with the rest of the update.
        """
        if self.loop_done:
            return
        self.loop_done = True
        self.state_slots = []
        prevs, inplace, inits = [], [], []
        for i, (s0, ph, upd) in enumerate(zip(loop.inits, loop.states, loop.updates)):
            nm = upd.user_name
            ip = None
            if not loop.gate[i] and i not in self.no_inplace:
                terms, bias = _linear_terms(upd)
                rest = [(n, k) for n, k in terms.values() if n is not ph]
                if (terms.get(ph.id, (None, 0.0))[1] == 1.0 and len(rest) == 1 and rest[0][0].op == "div"
                        and not bias.any()):
                    ip = rest[0]
            st = self.new_slot("state", ph, ph.size, ph.bound, name=nm)
            inits.append(("aff", st, [], np.asarray(s0.param, dtype=np.float64).reshape(-1)))
            if ip is not None:
                self.emit("body", "mov", st, st, {"offset": 2})
                prev = st
            else:
                prev = self.new_slot("prev", ph, ph.size, ph.bound, name=None if nm is None else nm + "prev")
                self.emit("body", "mov", st, prev, {"offset": 2})
            self.slot_of[ph.id] = prev
            # state slots keep their rows after the loop (as a hand-written program's would): a later
            # slot split across them would hide from the pruned schedule that x̃ columns are fixed points
            self.keep.add(st)
            self.state_slots.append(st)
            prevs.append(prev)
            inplace.append(ip)
        for i, upd in enumerate(loop.updates):
            st, ph = self.state_slots[i], loop.states[i]
            if inplace[i] is not None:  # state += k·a/|c| (Lemma 8 with the residual doing the addition)
                dv, k = inplace[i]
                src = self.materialize(dv.args[0])
                c = self.materialize(dv.args[1])
                self.emit("body", "div", src, c, st, float(k), True, _min_abs(dv.args[1]))
                self.inplace[st] = i
                continue
            if loop.gate[i]:
                gated = self.gated_update(loop, i)
                if gated is not None:
                    self.materialize(gated, into=st)
                    continue
                # state <- prev + is_y * (update - prev): x̃ columns keep their state
                diff = self.materialize(self.ctx._binary("add", upd, -ph))
                self.emit("body", "mul", diff, "is_y", st, (ph.size, 1, 1), 1.0, [(prevs[i], np.eye(ph.size))], None)
            else:
                self.materialize(upd, into=st)
        self.seg["pre"].extend(inits)  # after the example gathering the body needed (one layer either way)

    def gated_update(self, loop, i: int) -> Optional[Expr]:
        """``state + Σ k·is_y·t + Σ k·t'``: the update with only its non-vanishing terms gated, or None.

        The update's linear terms (through ``+`` and scalings) are split into the state's own
        term, constants, other loop states and the rest. The rest must vanish at ``x = 0,
        y = 0`` (checked on random states), as at x̃ columns; the state's, the constants' and
        other states' terms are multiplied by the ``is_y`` flag. None: some term does not vanish.
        """
        ctx, ph, upd = self.ctx, loop.states[i], loop.updates[i]
        terms, bias = _linear_terms(upd)
        k0 = terms.pop(ph.id, (ph, 0.0))[1]
        parts = []
        if k0 != 1.0:
            parts.append(self.raw("scale", (self.gate(ph),), k0 - 1.0))
        for n, k in terms.values():
            if n.op == "state":
                parts.append(self.raw("scale", (self.gate(n),), k))
            elif _vanishes_at_zero(n, loop.states):
                parts.append(self.raw("scale", (n,), k))
            else:
                return None
        if bias.any():
            parts.append(self.gate(ctx.const(bias.reshape(ph.shape))))
        out = ph
        for t in parts:
            out = self.raw("add", (out, t))
        return out

    def gate(self, e: Expr) -> Expr:
        """``is_y·e`` as a node (lowered as a ``mul`` with the flag; a constant's is a linear term)."""
        return self.raw("gate", (e,))

    def raw(self, op: str, args, param=None) -> Expr:
        """A node for the lowering only (``add``, ``scale``, ``gate``): no hash-consing and no tracing checks
        (loop-body nodes it combines are closed to user code, not to the lowering)."""
        a = args[0]
        if op == "add":
            lo, hi = a.lo + args[1].lo, a.hi + args[1].hi
        elif op == "scale":
            lo, hi = (param * a.lo, param * a.hi) if param >= 0 else (param * a.hi, param * a.lo)
        else:  # gate: the value or 0
            lo, hi = np.minimum(a.lo, 0.0), np.maximum(a.hi, 0.0)
        e = Expr(self.ctx, op, tuple(args), a.shape, lo, hi, max(x.level for x in args), False, param, a.where)
        e.id = len(self.ctx.nodes)
        self.ctx.nodes.append(e)
        return e

    # ------------------------------------------------------------------ program
    def prepass(self) -> None:
        """Give a slot, in creation (topological) order, to every reachable value that an op reads
        as a whole (product operands, divisions, sums, means): later linear forms then refer to
        that slot instead of re-expanding the value (which would compute its products twice)."""
        seen, stack, order = set(), [self.out], []
        while stack:
            n = stack.pop()
            if n.id in seen:
                continue
            seen.add(n.id)
            order.append(n)
            stack.extend(n.args)
            if n.op == "loop_out":
                stack.extend(n.param.updates)
        for n in sorted(order, key=lambda n: n.id):
            if n.level == STATE or n.op in ("state", "loop_out"):
                continue  # the loop body is lowered as a whole, on first use
            if n.op in ("mul", "matmul", "outer") and not any(a.op == "const" for a in n.args):
                for a in n.args:
                    if a.level != STATE:
                        self.operand(a)
            elif n.op in ("div", "sum", "mean"):
                for a in n.args:
                    self.materialize(a)

    def check_inplace(self, body: list) -> None:
        """An in-place state must not be read by a body op after the op that updates it."""
        for st, i in self.inplace.items():
            at = next(j for j, ins in enumerate(body) if ins[0] == "div" and ins[3] == st and ins[5])
            if any(st in _reads(ins) for ins in body[at + 1:]):
                raise _InPlaceClash(i)

    def program(self, algo) -> Program:
        out = self.out
        self.prepass()
        pred = self.materialize(out, force_new=True)
        p = Program(algo.d, x_bound=algo.x_bound, y_bound=algo.y_bound, name=algo.name)
        segs = [_asap(self.seg[k]) for k in ("pre", "body", "post")]
        self.check_inplace(segs[1])
        instr = segs[0] + ([("loop",)] + segs[1] + [("end",)] if segs[1] else []) + segs[2]
        first_w: Dict[str, int] = {}
        last_r: Dict[str, int] = {}
        loop_at = end_at = None
        for i, ins in enumerate(instr):
            if ins[0] == "loop":
                loop_at = i
            if ins[0] == "end":
                end_at = i
            for s in _reads(ins):
                last_r[s] = i
            w = _writes(ins)
            if w is not None:
                first_w.setdefault(w, i)
        live = set()
        deferred = []
        for i, ins in enumerate(instr):
            kind = ins[0]
            if kind == "loop":
                for s, fw in first_w.items():
                    if fw > i and fw < end_at and s not in live:
                        p.slot(s, self.sizes[s], bound=self.bounds[s])
                        live.add(s)
                ctxm = p.loop("examples")
                ctxm.__enter__()
                continue
            if kind == "end":
                ctxm.__exit__(None, None, None)
                for s in deferred:
                    p.free(s)
                    live.discard(s)
                deferred = []
                continue
            w = _writes(ins)
            if w is not None and w not in SYSTEM and w not in live:
                p.slot(w, self.sizes[w], bound=self.bounds[w])
                live.add(w)
            _emit(p, ins)
            for s in set(_reads(ins)) | ({w} if w else set()):
                if s in SYSTEM or s == pred or s not in live or s in self.keep:
                    continue
                if last_r.get(s, -1) <= i:
                    in_loop = loop_at is not None and loop_at < i < end_at
                    if in_loop:
                        deferred.append(s)
                    else:
                        p.free(s)
                        live.discard(s)
        p.readout(pred, columns="x")
        return p


class _InPlaceClash(Exception):
    """A loop state updated in place is read after its update in the body's order."""

    def __init__(self, index: int):
        self.index = index


def _asap(instrs: list) -> list:
    """Instructions stably sorted by their earliest stage (attention even, MLP odd).

    Emitting in this order before allocating slots means a freed slot is reused by an
    op of a later stage, so liveness-based reuse rarely delays the packing (Lemma 7).
    """
    ready: Dict[str, int] = {}
    keyed = []
    for i, ins in enumerate(instrs):
        k = ins[0]
        lb = max([ready.get(s, -1) + 1 for s in _reads(ins)] + [0])
        if k in ("mov",):
            st = lb + (lb % 2)
        elif k in ("aff", "count"):
            st = lb
        elif k in ("sum", "div"):
            lb = max([ready.get(s, -1) + 2 for s in _reads(ins)[:1]] + [lb, 1])
            st = lb + (1 - lb % 2)
        else:
            st = lb + (1 - lb % 2)
        w = _writes(ins)
        if w is not None:
            ready[w] = max(ready.get(w, -1), st)
        keyed.append((st, i, ins))
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [ins for _, _, ins in keyed]


def _combine(f1: Form, f2: Form) -> Form:
    t = dict(f1[0])
    for key, W in f2[0].items():
        t[key] = t[key] + W if key in t else W
    return t, f1[1] + f2[1]


def _mul_spec(node: Expr):
    """``(lhs, rhs, (a, b, c), natural bound or None, W)``: the kit ``mul`` for a product node.

    ``W`` maps the ``a·c`` outputs of the ``mul`` to the node's flattened value (identity
    except for an elementwise product, which is the diagonal of an outer product).
    """
    a, b = node.args
    k = node.size
    if node.op == "outer":
        return a, b, (a.size, 1, b.size), None, np.eye(k)
    if node.op == "matmul":
        n0 = a.shape[0] if len(a.shape) == 2 else 1
        kk = a.shape[-1]
        m0 = b.shape[1] if len(b.shape) == 2 else 1
        return a, b, (n0, kk, m0), None, np.eye(k)
    # mul
    if a.shape == ():
        return b, a, (b.size, 1, 1), None, np.eye(k)
    if b.shape == ():
        return a, b, (a.size, 1, 1), None, np.eye(k)
    W = np.zeros((k, k * k))
    W[np.arange(k), np.arange(k) * k + np.arange(k)] = 1.0
    return a, b, (k, 1, k), a.bound * b.bound, W


def _reads(ins) -> List[str]:
    k = ins[0]
    if k == "mul":
        return [ins[1], ins[2]] + [s for s, _ in ins[6]]
    if k == "aff":
        return [s for s, _ in ins[2]]
    if k == "mov":
        return [ins[1]]
    if k == "sum":
        return [ins[1], ins[3]]
    if k == "div":
        return [ins[1], ins[2]] + ([ins[3]] if ins[5] else [])
    return []


def _writes(ins) -> Optional[str]:
    k = ins[0]
    if k == "mul":
        return ins[3]
    if k == "aff":
        return ins[1]
    if k in ("mov", "sum"):
        return ins[2]
    if k == "div":
        return ins[3]
    if k == "count":
        return ins[1]
    return None


def _min_abs(c: Expr) -> float:
    """The divisor's proven lower bound, declared to the program as ``Div.min_abs`` (positive: ``/``
    refuses a divisor whose interval — analysis or a one-sided ``ctx.bound`` — reaches 0)."""
    return float(np.min(c.lo))


def _emit(p: Program, ins) -> None:
    k = ins[0]
    if k == "mul":
        _, lhs, rhs, dst, shape, coef, plus, bias = ins
        p.mul(lhs, rhs, dst, shape=shape, coef=coef, plus=plus or None, bias=bias)
    elif k == "aff":
        p.aff(ins[1], ins[2] or None, bias=ins[3])
    elif k == "mov":
        p.mov(ins[1], ins[2], **ins[3])
    elif k == "sum":
        p.sum(ins[1], ins[2], count=ins[3], scale=ins[4])
    elif k == "div":
        p.div(ins[1], ins[2], ins[3], coef=ins[4], accumulate=ins[5], min_abs=ins[6])
    elif k == "count":
        p.count(ins[1])


def _linear_terms(node: Expr):
    """``({id: (term, k)}, bias)``: ``node = Σ k·term + bias`` through ``+`` and scalings (constants to the bias)."""
    terms: Dict[int, Tuple[Expr, float]] = {}
    bias = np.zeros(node.size)

    def walk(n: Expr, k: float) -> None:
        nonlocal bias
        if n.op == "add":
            walk(n.args[0], k)
            walk(n.args[1], k)
        elif n.op == "scale":
            walk(n.args[0], k * n.param)
        elif n.op == "const":
            bias = bias + k * np.asarray(n.param, dtype=np.float64).reshape(-1)
        else:
            t = terms.get(n.id, (n, 0.0))
            terms[n.id] = (n, t[1] + k)

    walk(node, 1.0)
    return {i: t for i, t in terms.items() if t[1] != 0.0}, bias


def _vanishes_at_zero(e: Expr, states) -> bool:
    """Is ``e`` zero at ``x = 0, y = 0`` (the x̃ columns' example) for two random loop states?"""
    return all(not np.any(v != 0.0) for v, _ in at_empty_example(e, states, seed=0))


def _advice(slot: str, arg: Optional[str], where: str) -> str:
    """What the range check says when ``slot``, bounded by ``ctx.bound`` at ``where``, overflows."""
    if arg is not None:
        return (f"slot {slot!r} is bounded by the algorithm's argument {arg}= (ctx.bound at {where}): pass a "
                f"larger {arg} (larger bounds cost accuracy) or smaller inputs")
    return (f"slot {slot!r} is bounded by ctx.bound at {where}: raise that bound (larger bounds cost accuracy) "
            f"or keep inputs smaller")


def lower(ctx, out: Expr, algo) -> Program:
    """Compile the traced prediction ``out`` of ``algo`` into a :class:`Program`.

    Row reuse must not put a new slot's MLP write in the same layer as the attention write
    of the slot that held those rows (the compiled model checks each slot's bound after its
    layer, when the rows already hold the new value): such slots are kept and the program
    is rebuilt, until the packed schedule has no such layer.
    """
    gated = ctx.loop is not None or ctx.uses_mean
    keep: set = set()
    no_inplace: set = set()
    for _ in range(20):
        low = _Lowering(ctx, out, gated, getattr(algo, "max_bound", MAX_BOUND), frozenset(no_inplace))
        low.keep = keep
        try:
            p = low.program(algo)
        except _InPlaceClash as e:
            no_inplace.add(e.index)
            continue
        clash = _same_layer_reuse(p)
        if not clash:
            p.meta = {**(p.meta or {}), "bound_advice": dict(low.advice)}
            return p
        keep |= clash
    raise FrontendError(f"{algo.name}: could not allocate slots without same-layer reuse")  # pragma: no cover


def _same_layer_reuse(p: Program) -> set:
    """Slots written by a layer's attention whose rows that layer's MLP gives to another slot."""
    from ..compiler.schedule import schedule

    lay = p.layout
    out = set()
    for seg in schedule(p).segments:
        for plan in seg.layers:
            mlp = {op.writes() for op in plan.mlp_ops}
            for op in plan.attn_ops:
                a = op.writes()
                rows = set(lay.rows(a))
                if any(m != a and rows & set(lay.rows(m)) for m in mlp):
                    out.add(a)
    return out
