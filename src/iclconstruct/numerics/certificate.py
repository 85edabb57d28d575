"""End-to-end error certificate of a compiled model: a forward error analysis over its layers.

For every input within the program's declared bounds (the ones the run-time checks
enforce) and every context of up to ``n_examples`` examples, the certificate bounds
``|model readout − exact program readout|``. It walks the layers exactly as the model
runs them (``model.unrolled(T)``) and keeps, for every live slot, a bound ``B`` on the
magnitude of the exact value and a bound ``E`` on the model's error (both ∞-norms over
the slot's rows and over all columns), plus a bound ``F`` on the column sum of the
residual stream (0 in exact arithmetic: the ``bal`` row). Each sublayer adds:

* hard attention (docs/concepts.md §4): leaked softmax weight ``≤ 2e^{−(A − 2δℓ)}``
  per neighbour side, ``δℓ`` the round-off of the logits;
* the LayerNorm bypass (Lemma 6) and division (Lemma 8): a relative scale error
  ``φ = ‖rest‖²/(4K²) + …`` on everything the MLP reads, and the computed column mean
  ``μ̂`` as an absolute offset;
* the product trick (Lemma 4): truncation from the Taylor series of GeLU (the series of
  ``zΦ(z) − z/2`` alternates with decreasing terms for ``|z| ≤ 1``), plus round-off;
* the GeLU bypass (Lemma 5) pair: exact up to round-off;
* floating-point round-off of the model's dtype, with ``u = 2^{−53}`` or ``2^{−24}`` and
  the standard ``γ_n = nu/(1 − nu)`` for sums of ``n`` terms in any order.

Loops are unrolled. A program may declare that its loop-carried state is updated by a
map that is ``L``-Lipschitz in the 2-norm (``program.meta["contraction"]``; the SGD
circuit declares ``L = 1``, which its stability guard enforces); the certificate then
carries that state's error as ``e_k ≤ L·e_{k−1} + √size·ℓ_k`` with ``ℓ_k`` the error
one iteration adds, instead of the (exponentially loose) slot-wise propagation. That 2-norm
stays with the slot (and its copies by hard attention) until the slot is written again, and a
product over ``b`` terms bounds the propagated error by 2-norms (``‖L_i‖‖δR_j‖ ≤ √b·B_L·‖δR_j‖``).

The derivation, its assumptions and where it is loose: ``docs/certificate.md``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import ICLConstructError
from ..lang.validate import as_n_examples
from ..compiler.admissible import slack_for
from ..runtime.checks import divisor_tolerance

__all__ = ["Certificate", "certify", "unit_roundoff", "gamma", "product_truncation", "column_mean_bound", "GELU_ROUNDOFF"]

#: assumed accuracy of torch's GeLU: ``|fl(GeLU(z)) − GeLU(z)| ≤ GELU_ROUNDOFF·u·|z|``
#: (measured ≤ 4.4 in float32 and ≤ 2 in float64; ``tests/test_certificate.py`` re-measures it)
GELU_ROUNDOFF = 8.0

_SQRT_PI_2 = math.sqrt(math.pi / 2.0)


def unit_roundoff(dtype: torch.dtype) -> float:
    """Unit round-off ``u`` of ``dtype`` (half the machine epsilon)."""
    return float(torch.finfo(dtype).eps) / 2.0


def gamma(n: float, u: float) -> float:
    """``γ_n = nu / (1 − nu)``: relative error bound of a sum or dot product of ``n`` terms."""
    nu = n * u
    return nu / (1.0 - nu) if nu < 0.5 else math.inf


def column_mean_bound(F: float, P: float, S: float, D: int, u: float) -> float:
    """Bound on LayerNorm's computed column mean ``|μ̂|``: ``(F + γ_{D+2}·(P + γ_{D+2}·S))/D·(1 + 2u)``.

    ``F`` bounds the exact column sum, ``S`` the column's absolute sum and ``P`` the larger of its
    positive and negative parts. A sum of ``D`` terms in any order is a tree of ``D − 1`` additions,
    each rounding its computed partial sum ``ŝ_v`` once (``≤ u·|ŝ_v|``); every exact partial sum lies in
    ``[−Σ negatives, Σ positives]`` and every computed one within ``γ·S`` of it. The anchors ``±K``
    (or the division pair) land on opposite sides, so ``P ≈ K + rest`` where ``S ≈ 2K + rest``.
    """
    g = gamma(D + 2, u)
    return (F + g * (P + g * S)) / D * (1 + 2 * u)


def product_truncation(a: float, b: float, N: float, order: int = 2) -> float:
    """Bound on ``|√(π/2)·N²·[G((a+b)/N) − G(a/N) − G(b/N)] − ab|`` for ``|a|, |b| ≤`` the given values.

    ``order=4``: the Richardson combination ``(4·P_{2N} − P_N)/3`` (the N⁻² terms cancel).
    Lemma 4 with GeLU's series ``G(z) = z/2 + z²/√(2π) − z⁴/(6√(2π)) + z⁶/(40√(2π)) − …``,
    alternating with decreasing terms for ``|z| ≤ 1``: the quartic term gives
    ``ab(2a² + 3ab + 2b²)/(6N²)`` and the rest is at most ``((a+b)⁶ + a⁶ + b⁶)/(80N⁴)``.
    """
    a, b = abs(a), abs(b)
    if (a + b) / N > 1.0:
        return math.inf
    if order == 4:
        # (4·T_2N − T_N)/3: the N⁻² terms cancel; each remainder is at most s6/(80M⁴)
        return ((a + b) ** 6 + a ** 6 + b ** 6) / (80 * N ** 4) * (4.0 / 16.0 + 1.0) / 3.0
    return a * b * (2 * a * a + 3 * a * b + 2 * b * b) / (6 * N * N) + ((a + b) ** 6 + a ** 6 + b ** 6) / (80 * N ** 4)


@dataclass
class Certificate:
    """A rigorous bound on a compiled model's error, from :func:`certify`.

    Attributes:
        max_abs_error: upper bound on ``|model readout − exact program readout|`` at every
            readout column, for every input within the declared bounds that passes the
            run-time checks, and every context of up to ``n_examples`` examples.
        per_prediction: ``(n_examples + 1,)``: entry ``k`` bounds the readout of a forward
            pass over ``k`` examples (and a query); ``max_abs_error`` is their maximum.
        per_slot: one record per (layer, sublayer, slot written): ``{"layer", "sublayer",
            "slot", "bound", "error"}`` for the longest context, in execution order
            (``sublayer="loop"``: a loop-carried slot's error after its iteration, when the
            program declares a contraction).
        n_examples, dtype, unit_roundoff: what was certified.
        terms: the largest contribution of each error source at the readout's last write
            (``"product_truncation"``, ``"roundoff"``, ``"layernorm"``, ``"attention"``,
            ``"division"``, ``"propagated"``) — where to spend effort.
    """

    max_abs_error: float
    per_prediction: np.ndarray
    per_slot: List[dict]
    n_examples: int
    dtype: torch.dtype
    unit_roundoff: float
    terms: Dict[str, float] = field(default_factory=dict)

    def holds(self, error: float) -> bool:
        """Whether a measured ``|model − exact|`` is within the bound."""
        return bool(error <= self.max_abs_error)

    def slot_error(self, slot: str, layer: Optional[int] = None) -> float:
        """Largest certified error of ``slot`` (after ``layer``, or over all layers)."""
        vals = [r["error"] for r in self.per_slot if r["slot"] == slot and (layer is None or r["layer"] == layer)]
        if not vals:
            raise ICLConstructError(f"slot {slot!r} is not written{'' if layer is None else f' in layer {layer}'}")
        return max(vals)

    def __str__(self) -> str:
        dt = str(self.dtype).replace("torch.", "")
        parts = ", ".join(f"{k} {v:.2g}" for k, v in sorted(self.terms.items(), key=lambda kv: -kv[1]))
        return (f"Certificate({dt}, n_examples={self.n_examples}): |error| <= {self.max_abs_error:.3g}"
                + (f"  [{parts}]" if parts else ""))

    __repr__ = __str__


class _Errors(dict):
    """Slot → error bound (∞-norm) that counts the writes to each slot, so that a 2-norm bound recorded
    for one write (``_Analysis.E2``) is ignored once the slot is written again, by any code path."""

    def __init__(self, *args):
        super().__init__(*args)
        self.version: Dict[str, int] = dict(getattr(args[0], "version", {})) if args else {}

    def __setitem__(self, key, val) -> None:
        self.version[key] = self.version.get(key, 0) + 1
        super().__setitem__(key, val)

    def update(self, other=(), **kw) -> None:
        for k, v in dict(other, **kw).items():
            self[k] = v


class _Analysis:
    """State of the forward analysis: per-slot magnitude ``B`` and error ``E``, column-sum drift ``F``."""

    def __init__(self, model, T: int):
        self.m = model
        self.lay = model.layout
        self.c = model.constants
        self.u = unit_roundoff(model.dtype)
        self.T = T
        self.D = model.d_model
        self.B: Dict[str, float] = {}
        self.E: _Errors = _Errors()
        #: slot → (bound on the 2-norm of its error over its rows, the write of ``E`` it belongs to): kept
        #: where it is known better than ``√size·E`` (a contraction's carried state and its copies)
        self.E2: Dict[str, Tuple[float, int]] = {}
        lay = self.lay
        for s in lay.user_slots():
            self.B[s.name] = 0.0
            self.E[s.name] = 0.0
        self.B["y"], self.B["x"] = lay["y"].bound, lay["x"].bound
        for name in ("one", "is_y", "pos"):  # readable system rows: exact, in [0, 1]
            self.B[name], self.E[name] = 1.0, 0.0
        # pos holds float64 t/P (the interpreter's values); a float32 model rounds it: ≤ u·|pos| ≤ u
        self.E["pos"] = 0.0 if model.dtype == torch.float64 else unit_roundoff(model.dtype)
        # the tokens are checked as given (float64) and rounded to the model's dtype: ≤ u·|v|
        if model.dtype != torch.float64:
            self.E["x"], self.E["y"] = (unit_roundoff(model.dtype) * self.B[s] for s in ("x", "y"))
        u = self.u
        # embedding: the bal row is −(y + Σx) rounded, plus the rounded position part
        self.F = gamma(lay.d + 3, u) * (lay["y"].bound + lay.d * lay["x"].bound) + 8 * u * (2 * self.c.ln_anchor + 4)
        self.anchor_rel = 2 * u  # relative error of the anchor rows ±K
        self.anchor_left = 0.0    # |anchor| while silenced (div layers)
        self.pair_rel = 0.0
        self.pair_c = 0.0
        self.records: List[dict] = []
        self.terms: Dict[str, float] = {}
        slack = slack_for(model.dtype)  # the run-time checks' stated accuracy
        #: the model's run-time check caps every user slot it writes (checked at the end of each layer)
        self.cap = {s.name: s.bound * (1 + slack) + slack for s in lay.user_slots()
                    if s.name not in ("pos", "one", "is_y")}
        self.fresh: set = set()  # slots written by this layer's attention (not checked before the MLP)
        #: slots sharing rows (a freed slot's rows reused): an op overwriting ``s`` removes whatever the
        #: last of them left there, so the old value's size is the largest of theirs
        rows = {t.name: set(lay.rows(t.name)) for t in lay.user_slots()}
        self.sharers = {a: [b for b in rows if rows[a] & rows[b]] for a in rows}
        self._user_rows = sorted({r for t in self._live() for r in lay.rows(t.name)})
        self.owner: Dict[int, str] = {}  # row -> the slot that last wrote it (inputs: x, y)
        self.Vw: Dict[str, float] = {}   # a writer's B + E when it last wrote
        for name in ("x", "y"):
            self.Vw[name] = self.B[name] + self.E.get(name, 0.0)
            for r in lay.rows(name):
                self.owner[r] = name

    # -------------------------------------------------------------- helpers
    def V(self, name: str) -> float:
        """Bound on the magnitude of the model's value of slot ``name``.

        ``B + E``, and never more than what the model's own range check lets through
        (``bound·(1 + slack) + slack``) at a layer boundary.
        """
        v = self.B.get(name, 0.0) + self.E.get(name, 0.0)
        if name in self.cap and name not in self.fresh:
            v = min(v, self.cap[name])
        return v

    def set_err2(self, name: str, val: float) -> None:
        """Record a 2-norm bound for the current write of slot ``name``."""
        self.E2[name] = (val, self.E.version.get(name, 0))

    def err2(self, name: str, n: int) -> float:
        """Bound on the 2-norm of the error over any ``n`` rows of slot ``name``: ``√n·E``, or the slot's recorded
        2-norm bound if that belongs to its current write and is smaller."""
        base = math.sqrt(n) * self.E.get(name, 0.0)
        rec = self.E2.get(name)
        if rec is not None and rec[1] == self.E.version.get(name, 0):
            return min(rec[0], base)
        return base

    def _read_err2(self, name: str, n: int, e_read: float, scale_div: float) -> float:
        """2-norm bound of the error of an MLP's read of ``n`` rows of ``name`` (``e_read`` per row: the slot's
        own error plus the read's offset and scale error), ``inf`` where either is not finite."""
        E = self.E.get(name, 0.0)
        if not (math.isfinite(E) and math.isfinite(e_read)):
            return math.inf
        return self.err2(name, n) / scale_div + math.sqrt(n) * max(e_read - E / scale_div, 0.0)

    def _share(self, written) -> None:
        """After ``written`` slots changed: every slot sharing their rows (a freed slot's rows reused)
        now holds part of their values, so its bounds grow to cover them. A slot read later without
        being rewritten (a loop that ran zero times left its rows as the last writer left them) is then
        still bounded; the run-time check the rows passed is the writer's, so its cap counts too."""
        for d in written:
            # d now owns its rows: what they hold is bounded by d's own values (for the column sums)
            self.Vw[d] = self.B.get(d, 0.0) + self.E.get(d, 0.0)
            for r in self.lay.rows(d):
                self.owner[r] = d
            for t in self.sharers.get(d, ()):
                if t != d:
                    self.B[t] = max(self.B.get(t, 0.0), self.B.get(d, 0.0))
                    self.E[t] = max(self.E.get(t, 0.0), self.E.get(d, 0.0))
                    if t in self.cap and d in self.cap:
                        self.cap[t] = max(self.cap[t], self.cap[d])

    def Vold(self, name: str) -> float:
        """Bound on what the rows of slot ``name`` hold before an op overwrites them: ``V`` of any slot
        sharing those rows (the slot itself, or a freed slot whose rows it reuses)."""
        return max((self.V(t) for t in self.sharers.get(name, (name,))), default=0.0)

    def _live(self):
        return [s for s in self.lay.user_slots() if s.name not in ("pos", "one", "is_y")]

    def _row_sums(self) -> Tuple[float, float]:
        """``(Σ_r V_r, Σ_r V_r²)`` over the user rows, ``V_r`` bounding what row ``r`` holds: the values
        its last writer left there (each row counted once, however many slots share it)."""
        vs = []
        for r in self._user_rows:
            o = self.owner.get(r)
            if o is None:
                continue  # never written: 0
            v = self.Vw.get(o, 0.0)
            if o in self.cap and o not in self.fresh:
                v = min(v, self.cap[o])  # the run-time check the writer's rows passed
            vs.append(v)
        return float(sum(vs)), float(sum(v * v for v in vs))

    def _hard_leak(self, k_max: float) -> float:
        A, T, u = self.c.attn_hardness, self.T, self.u
        dl = gamma(12, u) * A * (3.0 * T * T + 2.0 * k_max * T + 4.0)
        gap = A - 2.0 * dl
        if gap <= 0:
            return 1.0
        return min(1.0, 2.0 * math.exp(-gap) / (1.0 - math.exp(-min(3.0 * gap, 700.0))))

    def _note(self, key: str, val: float) -> None:
        if val > self.terms.get(key, 0.0):
            self.terms[key] = val

    def _record(self, layer: int, sub: str, name: str) -> None:
        self.records.append({"layer": layer, "sublayer": sub, "slot": name, "bound": self.B[name], "error": self.E[name]})

    # -------------------------------------------------------------- attention
    def attention(self, plan, layer: int) -> None:
        from ..lang.ops import Aff, Count, Mov, Sum

        u, T, lay = self.u, self.T, self.lay
        leak = self._hard_leak(T)
        rho_hard = 3.0 * leak + 8.0 * u
        A = self.c.attn_hardness
        leak_mean = min(1.0, T * math.exp(-(A - 2.0 * gamma(8, u) * A))) if A > 4 * gamma(8, u) * A else 1.0
        rho_mean = 2.0 * leak_mean + gamma(T + 6, u)
        newB, newE, drift = {}, {}, 0.0
        n_terms = self.m.n_heads * self.m.d_head + 2

        moved2: Dict[str, float] = {}  # dst → 2-norm bound of a hard move's result (from src's, if recorded)

        def move(src: str, dst: str, rho: float, cap: float) -> float:
            """``dst ← src`` through a head (leak ``rho``), the self head subtracting the old value; returns the drift."""
            Vold, Vs = self.Vold(dst), self.V(src)
            extra = rho * Vs + rho_hard * Vold + gamma(3, u) * (Vs + 2 * Vold)  # per row, on top of src's error
            newE[dst] = self.E.get(src, 0.0) + extra
            if rho == rho_hard and src in self.E2:  # the copy's error: src's (2-norm) plus ≤ extra per row
                n = lay[dst].size
                moved2[dst] = self.err2(src, n) + math.sqrt(n) * extra
            self._note("attention", rho * Vs + rho_hard * Vold)
            newB[dst] = min(self.B.get(src, 0.0), cap)
            return gamma(n_terms, u) * 2 * (Vs + Vold)

        for op in plan.attn_ops:
            dst = op.dst
            Vold = self.Vold(dst)
            if isinstance(op, Mov):
                drift += move(op.src, dst, rho_mean if op.read.kind == "mean" else rho_hard, lay[dst].bound * (1 + 1e-12))
                continue
            if not isinstance(op, (Aff, Count)):  # no other op runs in an attention sublayer: not certified
                newB[dst], newE[dst] = lay[dst].bound, math.inf
                continue
            else:  # Aff or Count in the self head: a linear map of the column, exact up to leak and round-off
                terms, bias, e0, b0 = self._affine(op)
                eb, mag, bnd = self._linear(terms, bias, lay[dst].size)
                e = eb + e0 + rho_hard * (mag + Vold) + gamma(n_terms + 3, u) * (mag + 2 * Vold)
                self._note("attention", rho_hard * (mag + Vold))
                newB[dst] = min(bnd, b0, lay[dst].bound * (1 + 1e-12))
                drift += gamma(n_terms, u) * 2 * (mag + Vold)
            newE[dst] = e
        for op in plan.mlp_ops:  # a sum's averaging read over the ỹ columns (build._attention): dst ← mean(src)
            if isinstance(op, Sum):  # the mean is bounded by B_src, not by dst's bound (no check until the MLP)
                drift += move(op.src, op.dst, rho_mean, math.inf)
        K = self.c.ln_anchor
        if plan.divisor is not None:
            # Lemma 8 set-up: pair ← ±M·c (read through the self head), anchors silenced, targets cleared
            self.pair_rel = rho_hard + 4 * u
            self.pair_c = self.V(plan.divisor)
            self.anchor_left = (rho_hard + 4 * u) * K
            drift += 4 * self.anchor_left + gamma(n_terms, u) * 4 * self.c.div_scale * self.V(plan.divisor)
            for op in plan.mlp_ops:
                if not op.accumulate:
                    Vold = self.Vold(op.dst)
                    newB[op.dst], newE[op.dst] = 0.0, (rho_hard + gamma(3, u)) * 2 * Vold
                    drift += gamma(n_terms, u) * 2 * Vold
        elif plan.reset:
            self.anchor_rel = rho_hard + 4 * u + (self.anchor_left / K if K else 0.0)
            self.anchor_left = 0.0
            self.pair_rel = 0.0
            drift += 4 * (rho_hard + 4 * u) * (K + self.c.div_scale * self.pair_c)
        self.B.update(newB)
        self.E.update(newE)
        for dst, v in moved2.items():  # before _share: a sharer's widened bound is a new write
            self.set_err2(dst, v)
        self._share(newE)
        self.fresh = set(newE)
        bal = self._row_sums()[0] + 4.0 + self.F
        self.F += drift + u * bal
        for name in newE:
            self._record(layer, "attn", name)

    def _count_terms(self):
        """``(terms, e0)``: the count ``⌊(t + 1)/2⌋ = (P·pos₀ + is_y)/2`` as the compiler forms it
        (:func:`~iclconstruct.lang.embedding.count_terms`, ``P = max_len``), and the error ``e0`` of that
        expression in exact arithmetic on the rows' exact values: ``pos₀`` is ``t/P`` rounded to float64."""
        from ..lang.embedding import count_terms

        P = float(self.m.max_len)
        return tuple(count_terms(self.m.max_len).items()), P / 2 * 2.0 ** -53  # (P/2)·|fl₆₄(t/P) − t/P| ≤ (P/2)·2⁻⁵³

    def _affine(self, op):
        """``(terms, bias, e0, b0)`` of an ``Aff`` or ``Count`` op: its linear map, the error of that map
        on exact rows (``e0``) and a bound on its exact value (``b0``; a count is at most ``n = (T − 1)/2``)."""
        from ..lang.ops import Count

        if isinstance(op, Count):
            terms, e0 = self._count_terms()
            return terms, None, e0, float((self.T - 1) // 2)
        return op.terms, op.bias, 0.0, math.inf

    def _cancel_read(self, terms, size: int, mu: float, phi: float, cancels: Tuple[str, ...] = ()):
        """Per row (``error``, ``Σ|w|·|ĥ|``) of ``Σ W·h[s]`` read by MLP units with ``cancel_mean=True``.

        Their weights' sum sits on the row ``one`` (exactly 1) and in the bias (``MLPBuilder.weights``),
        so with ``ĥ_r = (h_r − μ̂)(1 + φ_r)`` the computed mean ``μ̂`` cancels: the read errs by
        ``Σ_s |W_s|·(E_s + (V_s + μ̂)φ) + |ΣW|·(1 + μ̂)φ`` (the ``one`` row's coefficient ``−ΣW``), and a
        slot in ``cancels`` (the old value, subtracted from the residual's own copy) loses its ``E_s``.
        ``Σ|w|·|ĥ|`` (bias included) sizes the round-off of the units' inputs.
        """
        err, rsum, wsum = np.zeros(size), np.zeros(size), np.zeros(size)
        for s, W in terms:
            W = np.asarray(W, dtype=np.float64)
            rows = np.abs(W).sum(axis=1)
            wsum += W.sum(axis=1)
            # a read of s: its own error (unless it cancels) and LayerNorm's relative error on |h − μ̂|
            v = self.Vold(s) if s in cancels else self.V(s)  # an old value: whatever its rows hold
            err += rows * ((0.0 if s in cancels else self.E.get(s, 0.0)) + (v + mu) * phi)
            rsum += rows * (v + mu) * (1 + phi)
        err += np.abs(wsum) * (1 + mu) * phi  # the row one (h = 1) carries −ΣW
        rsum += np.abs(wsum) * ((1 + mu) * (1 + phi) + 1)  # … and the bias +ΣW
        return err, rsum

    def _gelu_product(self, al: float, be: float, sx: float, sy: float, coef: float, rx: float, ry: float):
        """``(truncation, round-off, Σ|unit outputs|, units)`` of ``coef·x·y`` by Lemma 4's units
        (:func:`~iclconstruct.compiler.mlp.product_units`: scales ``sx, sy``; Richardson if ``product_order=4``),
        for read operands ``|x| ≤ al·sx``, ``|y| ≤ be·sy`` whose units' inputs sum ``rx``, ``ry`` in magnitude.

        Against ``coef·x·y`` of the operands as read: the truncation (:func:`product_truncation`), each
        unit's input round-off ``δ ≤ γ₈·Σ|w||ĥ|`` (≤ 5 terms and a bias, weights rounded twice) carried by
        ``|G'| ≤ 1.07``, and GeLU's own ``GELU_ROUNDOFF·u·|z|``. ``|G(z)| ≤ |z|(1/2 + |z|/√(2π))`` sizes the outputs.
        """
        c, u = self.c, self.u
        N = c.product_scale
        tr = abs(coef) * sx * sy * product_truncation(al, be, N, c.product_order)  # Lemma 4 truncation
        groups = ((4.0 / 3.0, 2.0 * N), (1.0 / 3.0, N)) if c.product_order == 4 else ((1.0, N),)
        rnd = out = 0.0
        for cj, Nj in groups:
            g = abs(coef * cj) * sx * sy * _SQRT_PI_2 * Nj * Nj  # the units' output gain
            dx, dy = gamma(8, u) * rx / (sx * Nj), gamma(8, u) * ry / (sy * Nj)  # input round-off of the (x), (y) units
            zs = (al / Nj + be / Nj + dx + dy, al / Nj + dx, be / Nj + dy)  # |computed inputs|: (x+y), (x), (y)
            rnd += g * (1.07 * 2 * (dx + dy) + GELU_ROUNDOFF * u * sum(zs))  # δ's through |G'| ≤ 1.07; GeLU round-off
            out += g * sum(z * (0.5 + z / math.sqrt(2 * math.pi)) for z in zs)  # |G(z)| ≤ |z|(1/2 + |z|/√(2π))
        return tr, rnd, out, 3 * len(groups)

    def _reduction(self, op, eop, mu: float, phi: float, lin_round) -> Tuple[float, float, float]:
        """MLP of a ``count`` or ``sum`` (build._mlp, not in a div layer): ``(B, E, Σ|unit outputs|)`` per row of dst.

        Count: the bypass pair ``(P·pos₀ + is_y)/2 − old`` with ``cancel_mean=True``. Sum: the attention
        left the mean ``m̃`` in dst; a bypass pair subtracts its read, Lemma 4 adds ``scale·m̂·ĉ`` with ``ĉ``
        the count slot (scale its bound) or the count expression (``cancel_mean``, scale ``P/2``).
        """
        from ..lang.ops import Count

        u, lay, dst = self.u, self.lay, op.dst
        n = float((self.T - 1) // 2)  # most examples a column has seen
        Vold = self.Vold(dst)
        if isinstance(op, Count):
            terms, e0 = self._count_terms()
            err, rsum = self._cancel_read(terms + ((dst, -np.eye(1)),), 1, mu, phi, cancels=(dst,))
            z = float(rsum[0])  # the pair carries the (P+1)/2-sized input, not just count − old
            d_in = gamma(8, u) * z  # round-off of the pair's input (≤ 4 terms and a bias)
            e = e0 + float(err[0]) + 1.07 * d_in + float(lin_round(np.array([z]))[0]) + gamma(4, u) * z + u * (Vold + z)
            self._note("layernorm", float(err[0]))
            return min(n, lay[dst].bound * (1 + 1e-12)), e, 2 * z
        # sum: operands as build._sum_units makes them (count= never shares dst's rows: Program.sum refuses it)
        Bm, Vm = self.B.get(dst, 0.0), self.V(dst)  # the mean (this layer's attention wrote it; not range-checked yet)
        if op.count is None:
            terms, e0 = self._count_terms()
            ec, ry = (float(v[0]) for v in self._cancel_read(terms, 1, mu, phi))
            ec, Bc, sy = ec + e0, n, 0.5 * self.m.max_len
            em, rx = (float(v[0]) for v in self._cancel_read(((dst, np.eye(1)),), 1, mu, phi))
        else:
            ec, Bc, sy = eop(op.count), min(n, self.B.get(op.count, 0.0)), lay[op.count].bound
            ry = (self.V(op.count) + mu) * (1 + phi)
            em, rx = eop(dst), (Vm + mu) * (1 + phi)
        sx = lay[op.src].bound
        tr, rnd, out, k = self._gelu_product((Bm + em) / sx, (Bc + ec) / sy, sx, sy, op.scale, rx, ry)
        prop = abs(op.scale) * (Bm * ec + Bc * em + em * ec)  # |m̂ĉ − m·c| for the read operands
        clear = mu + (Vm + mu) * phi  # the clear reads m̃; its own error cancels against the residual's (old_err)
        z = (Vm + mu) * (1 + phi)  # |the clear pair's input|
        lin = clear + 1.07 * gamma(8, u) * z + float(lin_round(np.array([z]))[0])
        term_abs = z + out
        e = lin + prop + tr + rnd + gamma(k + 4, u) * term_abs + u * (Vm + term_abs)  # + Σ of k + 2 unit outputs, residual add
        self._note("product_truncation", tr)
        self._note("roundoff", rnd)
        self._note("propagated", prop)
        return min(abs(op.scale) * Bm * Bc, lay[dst].bound * (1 + 1e-12)), e, term_abs

    def _linear(self, terms, bias, size: int) -> Tuple[float, float, float]:
        """(``max_i Σ|W_ic|·E_c``, ``max_i Σ|W_ic|·V_c + |b_i|``, ``max_i Σ|W_ic|·B_c + |b_i|``) for ``Σ W·h[s] + b``."""
        err, mag, bnd = self._linear_rows(terms, bias, size, lambda s: self.E.get(s, 0.0))
        return float(err.max(initial=0.0)), float(mag.max(initial=0.0)), float(bnd.max(initial=0.0))

    def _linear_rows(self, terms, bias, size: int, eop) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: Σ|W|·eop(s), Σ|W|·V(s) + |b|, Σ|W|·B(s) + |b|."""
        err = np.zeros(size)
        mag = np.zeros(size)
        bnd = np.zeros(size)
        for s, W in terms:
            rows = np.abs(np.asarray(W, dtype=np.float64)).sum(axis=1)
            err += rows * eop(s)
            mag += rows * self.V(s)
            bnd += rows * self.B.get(s, 0.0)
        if bias is not None:
            b = np.abs(np.asarray(bias, dtype=np.float64)).reshape(-1)
            mag += b
            bnd += b
        return err, mag, bnd

    # -------------------------------------------------------------- MLP
    def mlp(self, plan, layer: int) -> None:
        from ..lang.ops import Aff, Count, Div, Mul, Sum

        if not plan.mlp_ops:
            self.fresh = set()
            return
        u, D, c, lay = self.u, self.D, self.c, self.lay
        N = c.product_scale
        S_user, Q_user = self._row_sums()
        bal = S_user + 4.0 + self.F
        divide = plan.divisor is not None
        if divide:
            # |ĉ| ≥ c_lo: the run-time checks (div_min, and the declared minimum less its tolerance); the exact
            # |c| ≥ c_ex: the program's declared minimum (Div.min_abs), or what the computed one leaves
            Ec = self.E.get(plan.divisor, 0.0)
            declared = plan.divisor_min
            c_lo = max(c.div_min, declared - divisor_tolerance(self.m, plan), 1e-300)
            c_ex = max(declared, c_lo - Ec)
            c_lo = max(c_lo, c_ex - Ec)
            c_hi = self.V(plan.divisor)
            M = c.div_scale
            K_lo = M * c_lo * (1.0 - self.pair_rel)
            S_rest = bal + S_user + 4.0 + 2.0 * self.anchor_left
            Q = Q_user + bal * bal + 4.0 + 2.0 * self.anchor_left ** 2
            # μ̂/|c̃|: every partial sum of the column is at most max(Σ positive, Σ negative) ≤ M|c̃|(1+…) + S_rest
            # (the pair ±M·c̃ lands on opposite sides), so the sum's round-off is γ·(M|c̃|(1+…) + S_rest), plus
            # γ² of the column's absolute sum for the partial sums' own errors
            Mr = M * (1 + self.pair_rel)  # |pair|/|c̃|
            mu = column_mean_bound(self.F / c_lo, Mr + S_rest / c_lo, 2 * Mr + S_rest / c_lo, D, u)
            rel_anchor = self.pair_rel
            scale_div = c_lo
        else:
            K = c.ln_anchor
            K_lo = K * (1.0 - self.anchor_rel)
            S_abs = 2 * K * (1 + self.anchor_rel) + bal + S_user + 4.0
            Q = Q_user + bal * bal + 4.0 + 2.0 * self.anchor_left ** 2
            # a sum of D terms in any order rounds each partial sum ŝ_v once: |error| ≤ u·Σ_v |ŝ_v|, and every
            # exact partial sum lies within max(Σ positive, Σ negative) ≤ K(1+…) + the rest (the anchors ±K land
            # on opposite sides), each computed one within γ·S_abs of it
            P_max = K * (1 + self.anchor_rel) + bal + S_user + 4.0
            mu = column_mean_bound(self.F, P_max, S_abs, D, u)
            rel_anchor = self.anchor_rel
            scale_div = 1.0
        mu_raw = mu * (c_hi if divide else 1.0)  # the mean in the column's own units
        rho_ln = (Q + D * c.ln_eps + 2 * mu_raw * self.F + D * mu_raw ** 2) / (4.0 * K_lo * K_lo)
        theta_sigma = gamma(D + 6, u) / 2.0 + 2 * u
        phi = rho_ln + rel_anchor + theta_sigma + 6 * u
        self._note("layernorm", phi)
        nb = c.bypass_scale
        cg = GELU_ROUNDOFF

        def eop(s: str) -> float:
            """Error of the MLP's reading of slot ``s`` (of ``s/|c|`` in a div layer)."""
            return (self.E.get(s, 0.0) / scale_div + mu) + (self.V(s) / scale_div + mu) * phi

        def lin_round(z: np.ndarray) -> np.ndarray:
            """Round-off of a bypass pair carrying ``|z|`` (Lemma 5), as computed by the model."""
            if nb is None:
                return (cg + 2) * u * z
            tail = (nb - z) * math.erfc((nb - z.max(initial=0.0)) / math.sqrt(2)) / 2 if nb > z.max(initial=0.0) else math.inf
            return (cg + 2) * u * (z + nb) + 2 * u * nb + tail

        newB, newE = {}, {}
        units_abs = 0.0
        m_row = 0  # the most terms any one user row's output sum adds (the bal row's adds every unit's)
        written_abs = 0.0
        for op in plan.mlp_ops:
            dst = op.dst
            size = lay[dst].size
            Vold = self.Vold(dst)
            if isinstance(op, Div):
                if c_ex <= 0:
                    e = math.inf
                else:
                    Vs, Bs = self.V(op.src), self.B.get(op.src, 0.0)
                    # |s/c − ŝ/ĉ| ≤ |s − ŝ|/|ĉ| + |s|·|ĉ − c|/(|c||ĉ|)
                    quot = Bs * Ec / (c_ex * c_lo)
                    q = abs(op.coef) * (eop(op.src) + quot)
                    z = np.array([abs(op.coef) * Vs / c_lo])
                    r = float(lin_round(z)[0]) + gamma(4, u) * 2 * z[0] + u * (Vold + z[0])
                    self._note("division", abs(op.coef) * ((Vs / c_lo + mu) * phi + quot))
                    e = q + r + self.E.get(dst, 0.0)  # accumulate: the old error stays; else: the clear's
                    units_abs += 2 * z[0]
                    m_row = max(m_row, 4)
                nbnd = (self.B.get(dst, 0.0) if op.accumulate else 0.0) + abs(op.coef) * self.B.get(op.src, 0.0) / max(c_ex, 1e-300)
                newB[dst] = min(nbnd, lay[dst].bound * (1 + 1e-12))
                newE[dst] = e
                written_abs += newB[dst] + e
                continue
            if isinstance(op, (Count, Sum)):  # the example reductions (docs/certificate.md, "Count and sum")
                newB[dst], newE[dst], t_abs = self._reduction(op, eop, mu, phi, lin_round)
                units_abs += size * t_abs
                m_row = max(m_row, self.m.d_mlp)  # (not counted per row: as many as the layer has)
                written_abs += size * (newB[dst] + newE[dst])
                continue
            if not isinstance(op, (Mul, Aff)):  # no other op runs in an MLP: not certified
                newB[dst], newE[dst] = lay[dst].bound, math.inf
                continue
            terms = op.plus if isinstance(op, Mul) else op.terms
            lin_err, lin_mag, lin_bnd = self._linear_rows(terms, op.bias, size, eop)
            z_lin = lin_mag + Vold  # the bypass unit carries Σ W·h + b − old
            # the old value is subtracted from the residual's exact copy: its error cancels
            old_err = mu + (Vold + mu) * phi
            e_rows = lin_err + old_err + lin_round(z_lin)
            m_units = 2 * np.ones(size)
            term_abs = z_lin.copy()
            prod_bnd = np.zeros(size)
            if isinstance(op, Mul):
                a, b, cc = op.shape
                L, R = op.lhs, op.rhs
                sx, sy = self.m.operand_scales.get(id(op), (lay[L].bound, lay[R].bound))
                eL, eR = eop(L), eop(R)
                BL, BR = self.B.get(L, 0.0), self.B.get(R, 0.0)
                al, be = (BL + eL) / sx, (BR + eR) / sy
                # Lemma 4's units for one scalar product (the same analysis as a sum's product):
                # truncation, the units' input round-off and GeLU's own, and the size of their outputs
                rx = (self.V(L) / scale_div + mu) * (1 + phi)
                ry = (self.V(R) / scale_div + mu) * (1 + phi)
                tr, rnd, out, n_units = self._gelu_product(al, be, sx, sy, 1.0, rx, ry)
                rnd = rnd + u * (BL + eL) * (BR + eR)  # the product's own rounding in the output row
                k = abs(op.coef) * b
                # Σ_k |L_ik δR_kj| + |δL_ik R_kj| + |δL_ik δR_kj| ≤ ‖L_i‖‖δR_j‖ + ‖δL_i‖‖R_j‖ + ‖δL_i‖‖δR_j‖ (2-norms
                # over the b terms: ‖L_i‖ ≤ √b·B_L; ‖δR_j‖ ≤ the slot's error 2-norm where recorded, else √b·E_R,
                # plus √b times the read's own offset) — b·(B_L e_R + B_R e_L + e_L e_R) without a recorded 2-norm
                rb = math.sqrt(b)
                c2L, c2R = self._read_err2(L, b, eL, scale_div), self._read_err2(R, b, eR, scale_div)
                prop = (abs(op.coef) * (rb * BL * c2R + rb * BR * c2L + c2L * c2R)
                        if math.isfinite(c2L) and math.isfinite(c2R) else math.inf)
                e_rows = e_rows + k * (tr + rnd) + prop
                m_units = m_units + n_units * b
                term_abs = term_abs + k * out
                prod_bnd = prod_bnd + k * BL * BR
                self._note("product_truncation", k * tr)
                self._note("roundoff", k * rnd)
                self._note("propagated", prop)
            sums = np.array([gamma(mm + 2, u) for mm in m_units]) * term_abs
            e_rows = e_rows + sums + u * (Vold + lin_mag + prod_bnd)
            units_abs += float(term_abs.sum())
            m_row = max(m_row, int(m_units.max(initial=0)))
            e = float(e_rows.max(initial=0.0))
            newB[dst] = min(float((lin_bnd + prod_bnd).max(initial=0.0)), lay[dst].bound * (1 + 1e-12))
            newE[dst] = e
            written_abs += size * (newB[dst] + e)
        self.B.update(newB)
        self.E.update(newE)
        self._share(newE)
        self.fresh = set()
        m_all = max(self.m.d_mlp, 1)
        bal = self._row_sums()[0] + 4.0 + self.F
        # the column sum drifts by the rounding of every row's output sum: each user row's adds at most
        # m_row terms, the bal row's (minus their sum) every unit's
        self.F += (gamma(m_all + 2, u) + gamma(min(m_row, m_all) + 2, u)) * units_abs + u * (written_abs + bal)
        for name in newE:
            self._record(layer, "mlp", name)


def _contraction(program) -> Optional[dict]:
    meta = getattr(program, "meta", None) or {}
    cfg = meta.get("contraction")
    if not cfg:
        return None
    return {"slots": list(cfg["slots"]), "lipschitz": float(cfg["lipschitz"])}


def _copy(an: _Analysis) -> _Analysis:
    new = _Analysis.__new__(_Analysis)
    new.__dict__.update(an.__dict__)
    new.B, new.E, new.terms = dict(an.B), _Errors(an.E), dict(an.terms)
    new.E2 = dict(an.E2)
    new.cap, new.owner, new.Vw = dict(an.cap), dict(an.owner), dict(an.Vw)
    new.records = list(an.records)
    return new


def _run_segments(an: _Analysis, model, segments, n_iter: int, layer: int, hint, snapshots=None) -> int:
    """Analyse ``segments`` with ``n_iter`` iterations of each example loop; returns the next layer index.

    With ``snapshots`` (a list), after each iteration ``k`` of the (single) example loop the
    rest of the program is analysed on a copy and its readout error appended: the bound
    for a forward pass over ``k`` examples (using this run's longer context for the leaks).
    """
    for si, (idx, rep) in enumerate(segments):
        times = n_iter if rep == "examples" else int(rep)
        use_hint = hint is not None and rep == "examples"
        e2 = {s: math.sqrt(an.lay[s].size) * an.E[s] for s in hint["slots"]} if use_hint else {}

        def finish_loop(a: _Analysis) -> None:
            if use_hint and times:
                for op in (op for bi in idx for op in model.plans[bi].ops):
                    if op.dst not in hint["slots"]:
                        a.E[op.dst] = math.inf  # scratch of the body: not certified after the loop

        def snap(a: _Analysis) -> None:
            if snapshots is not None and rep == "examples":
                b = _copy(a)
                finish_loop(b)
                _run_segments(b, model, segments[si + 1:], n_iter, layer, hint)
                snapshots.append(b.E[model.program.readout_slot])

        snap(an)
        for _ in range(times):
            if use_hint:
                for s in hint["slots"]:  # one iteration's own error, on a state that includes the carried error
                    an.B[s] = an.B[s] + an.E[s]
                    an.E[s] = 0.0
            for bi in idx:
                plan = model.plans[bi]
                an.attention(plan, layer)
                an.mlp(plan, layer)
                layer += 1
            if use_hint:
                for s in hint["slots"]:
                    # a carried error of 0 (the first iteration on an exact state): the iteration's own ∞-norm
                    # bound is the state's; the 2-norm (√size·ℓ) is what the contraction carries on
                    first = e2[s] == 0.0
                    e2[s] = hint["lipschitz"] * e2[s] + math.sqrt(an.lay[s].size) * an.E[s]
                    an.E[s] = min(e2[s], an.E[s]) if first else e2[s]
                    an.set_err2(s, e2[s])
                    an.B[s] = min(an.B[s], an.lay[s].bound * (1 + 1e-12))
                    an._share((s,))
                    an.records.append({"layer": layer - 1, "sublayer": "loop", "slot": s, "bound": an.B[s],
                                       "error": an.E[s]})
            snap(an)
        finish_loop(an)
        if snapshots is not None and rep == "examples":
            snapshots = None  # the remaining segments run once, on the final state
    return layer


def certify(model, n_examples: int) -> Certificate:
    """Certify ``model`` for every context of up to ``n_examples`` examples (see :class:`Certificate`).

    The bound holds for inputs within the program's declared bounds that pass the model's
    run-time checks (divisors ``≥ div_min``, every slot within its bound), assuming the
    round-off model of ``docs/certificate.md`` (IEEE arithmetic, sums and dot products
    within ``γ_n``, GeLU within ``GELU_ROUNDOFF·u·|z|``).
    """
    n_examples = as_n_examples(n_examples, model.max_len, min=0,
                               advice=f"certify at most n_examples={(model.max_len - 1) // 2}")
    if model.program.readout_slot is None:
        raise ICLConstructError("the model's program has no readout to certify")
    hint = _contraction(model.program)
    segments = [(idx, seg.repeat if hasattr(seg, "repeat") else seg) for idx, seg in model._segments]
    T = 2 * n_examples + 1
    n_loops = sum(1 for _, rep in segments if rep == "examples")
    final = _Analysis(model, T)
    if n_loops == 0:
        _run_segments(final, model, segments, n_examples, 0, hint)
        per = np.full(n_examples + 1, final.E[model.program.readout_slot])
    elif n_loops == 1:
        snaps: List[float] = []
        _run_segments(final, model, segments, n_examples, 0, hint, snapshots=snaps)
        per = np.array(snaps, dtype=np.float64)
    else:
        per = np.zeros(n_examples + 1)
        for k in range(n_examples + 1):
            an = _Analysis(model, T)
            _run_segments(an, model, segments, k, 0, hint)
            per[k] = an.E[model.program.readout_slot]
        _run_segments(final, model, segments, n_examples, 0, hint)
    per = np.where(np.isnan(per), np.inf, per)  # an analysis that broke down (inf − inf) certifies nothing
    per = np.maximum.accumulate(per)
    return Certificate(
        max_abs_error=float(per.max()),
        per_prediction=per,
        per_slot=final.records,
        n_examples=n_examples,
        dtype=model.dtype,
        unit_roundoff=final.u,
        terms=dict(final.terms),
    )
