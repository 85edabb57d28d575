"""A-posteriori bound for any program: the float64 interpreter re-run with a running error bound.

The a-priori certificate (:mod:`iclconstruct.numerics.certificate`) bounds a model's error
over every input within the declared bounds; on a particular input it is loose (docs/certificate.md,
"Where it is loose"). After a forward pass the model's readout ``ŷ`` can instead be compared
with the program run on the same tokens by the float64 interpreter
(:func:`~iclconstruct.lang.interpreter.interpret`), whose own distance from exact arithmetic is
bounded here by a running forward error analysis (Higham, *Accuracy and Stability of
Numerical Algorithms*, §3.1–3.5) carried alongside the values::

    |ŷ − y_exact| ≤ |ŷ − ŷ_ref| + E_ref

with ``ŷ_ref`` the interpreter's readout and ``E_ref`` the bound on ``|ŷ_ref − y_exact|``. The
bound holds exactly; it is as tight as the measured difference ``|ŷ − ŷ_ref|`` plus ``E_ref``
(≈ 1e−13 relative on the shipped circuits, far below any model's error).

**The running bound.** ``E`` ``(B, T, D)`` bounds ``|Ĥ − H|`` entrywise, ``Ĥ`` the interpreter's
values and ``H`` the exact program's on the same float64 tokens (the embedding, including the
float64 position rows ``pos``, is exact by definition: ``E = 0``). With ``u = 2⁻⁵³`` and
``γ_k = ku/(1 − ku)``, for each op (``|·|`` entrywise, products of matrices of absolute values):

* ``mov`` (offset, position): a copy, ``E`` copied. ``mov`` (mean over ``≤ t``): the weights
  ``1/c`` carry ``u``; ``E ← W·E_src + γ_{T+2}·W·|Ŝ|``.
* ``mul`` ``coef·L@R + Σ W_s·h_s + b`` over ``b`` inner terms:
  ``|coef|(|L̂|E_R + E_L|R̂| + E_L E_R) + Σ E_s|W_s|ᵀ + γ_m(|coef||L̂||R̂| + Σ|ĥ_s||W_s|ᵀ + |b|)``
  with ``m`` the most roundings any addend passes through (``b + Σ k_s +`` the number of terms ``+ 3``).
* ``aff``: the same without the product.
* ``div`` ``coef·s/|c|``: with ``c_lo = |ĉ| − E_c > 0`` (else ``inf``),
  ``|coef|(E_s/c_lo + |ŝ|E_c/(c_lo|ĉ|)) + γ_2|q̂|``; accumulating adds the old error and ``u`` of the sum.
* ``count``: integers, exact. ``sum`` ``scale·Σ_{ỹ ≤ t} src``: ``|scale|(Σ E_src + γ_{T+1}Σ|ŝ|)``.

A loop whose program declares a contraction (``program.meta['contraction']``: the state
slots and a 2-norm Lipschitz constant ``L`` of one iteration, e.g. SGD's ``w`` with ``L = 1``, which
its input guard enforces; used only when the tokens pass the program's guards) carries the state's error in the 2-norm, as the certificate does:
``e ← L·max_t e + ‖ℓ_t‖₂`` per batch element, with ``ℓ`` the error one iteration adds on the
computed state (the iteration is run with the state's error set to 0); the body's other slots are
bounded only relative to that computed state, so their ``E`` is ``inf`` after each iteration (nothing
after the loop may rely on them, as in the a-priori certificate). Without that, the
entrywise propagation of an iteration like SGD's grows by up to ``1 + 2·lr·‖x‖₁²`` per step.

The bound itself is evaluated in float64: every sum of non-negative terms above is multiplied
by ``1 + 2γ_{k+8}`` (``k`` its terms), which covers its own rounding, and the final bound by
``1 + 4u``, plus ``1e−300`` for underflow.

Assumptions: IEEE-754 float64 with round-to-nearest, conventional (not Strassen-like)
matrix products in numpy, no overflow; the model's readout is compared with the interpreter
on the tokens as the caller passed them (float64 values; a float32 model's rounding of its
inputs is part of its error).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["bounded_interpret", "recompute_bounds", "readout_bounds", "recompute_spec", "FLOAT32_RECOMPUTE_ACCURACY",
           "FLOAT64_RECOMPUTE_ACCURACY"]

#: the stated accuracy of a float32 circuit checked by recomputation: ``|ŷ − exact| ≤ 1e-2·(1 + |exact|)``
FLOAT32_RECOMPUTE_ACCURACY = 1e-2
#: the stated accuracy of a float64 program checked by recomputation: ``|ŷ − exact| ≤ 1e-6·(1 + |exact|)``
FLOAT64_RECOMPUTE_ACCURACY = 1e-6

_U = 2.0 ** -53
_TINY = 1e-300


def _g(k: float) -> float:
    ku = float(k) * _U
    return ku / (1.0 - ku)


def _up(x: np.ndarray, k: float) -> np.ndarray:
    """``x`` (a float64 sum of ``k`` non-negative terms) rounded up past its own round-off."""
    return x * (1.0 + 2.0 * _g(k + 8))


def recompute_spec(float32: float = FLOAT32_RECOMPUTE_ACCURACY,
                   float64: Optional[float] = FLOAT64_RECOMPUTE_ACCURACY) -> dict:
    """``program.meta['aposteriori']`` of a circuit checked by recomputation: the stated accuracy per
    dtype (a dtype without an entry is not checked at run time; ``model.verify`` still bounds it)."""
    acc = {"float32": float(float32)}
    if float64 is not None:
        acc["float64"] = float(float64)
    return {"kind": "recompute", "accuracy": acc}


def _mean_weights(read_k: int, T: int, cols: np.ndarray) -> np.ndarray:
    """``(C, T)``: the interpreter's averaging weights of a ``mean`` read (``lang.interpreter.apply_op``:
    ``1/count`` over the set's columns ``j ≤ t``, over all of them while the set is empty) at columns ``cols``."""
    j = np.arange(T)
    member = np.ones(T, dtype=bool) if read_k == 0 else (j % 2 == read_k - 1)
    upto = j[None, :] <= cols[:, None]
    M = member[None, :] & upto
    empty = ~M.any(axis=1)
    M = np.where(empty[:, None], upto, M).astype(np.float64)
    return M / M.sum(axis=1, keepdims=True)


def _affine_err(H, E, lay, terms, bias, shape) -> Tuple[np.ndarray, np.ndarray, int]:
    """(propagated error, Σ|addends|, roundings) of ``Σ W·h[s] + b`` (the interpreter's ``_add_affine``)."""
    prop = np.zeros(shape)
    mag = np.zeros(shape)
    m = 0
    for s, W in terms:
        aW = np.abs(np.asarray(W, dtype=np.float64))
        prop = prop + _up(lay.view(E, s) @ aW.T, aW.shape[1])
        mag = mag + _up(np.abs(lay.view(H, s)) @ aW.T, aW.shape[1])
        m += aW.shape[1] + 1
    if bias is not None:
        mag = mag + np.abs(np.asarray(bias, dtype=np.float64))
        m += 1
    return prop, mag, m


def _op_error(op, H: np.ndarray, E: np.ndarray, lay) -> np.ndarray:
    """Bound on ``|Ĥ − H|`` of ``op.dst`` after ``op`` (``H``, ``E`` before it); see the module doc."""
    from ..lang.ops import Aff, Count, Div, Mov, Mul, Sum

    T = H.shape[1]
    if isinstance(op, Mov):
        Es = lay.view(E, op.src)
        if op.read.kind == "offset":
            return Es[:, np.maximum(np.arange(T) - op.read.k, 0)]
        if op.read.kind == "position":
            return Es[:, np.minimum(op.read.k, np.arange(T))]
        W = _mean_weights(op.read.k, T, np.arange(T)).T
        S = np.abs(lay.view(H, op.src))
        return _up(np.einsum("jt,bjk->btk", W, Es + _g(T + 2) * S), T) * (1 + 2 * _U)
    if isinstance(op, Mul):
        a, b, c = op.shape
        lead = H.shape[:2]
        L, R = lay.view(H, op.lhs).reshape(lead + (a, b)), lay.view(H, op.rhs).reshape(lead + (b, c))
        EL, ER = lay.view(E, op.lhs).reshape(lead + (a, b)), lay.view(E, op.rhs).reshape(lead + (b, c))
        aL, aR = np.abs(L), np.abs(R)
        k = abs(float(op.coef))
        prop = k * _up(aL @ ER + EL @ aR + EL @ ER, 3 * b)
        mag = k * _up(aL @ aR, b)
        size = a * c
        p2, m2, m = _affine_err(H, E, lay, op.plus, op.bias, lead + (size,))
        m_all = b + m + len(op.plus) + 3
        return _up(prop.reshape(lead + (size,)) + p2 + _g(m_all) * (mag.reshape(lead + (size,)) + m2), 4)
    if isinstance(op, Aff):
        size = lay[op.dst].size
        p2, m2, m = _affine_err(H, E, lay, op.terms, op.bias, H.shape[:2] + (size,))
        return _up(p2 + _g(m + len(op.terms) + 2) * m2, 2)
    if isinstance(op, Div):
        c = np.abs(lay.view(H, op.divisor))
        Ec = lay.view(E, op.divisor)
        s = lay.view(H, op.src)
        Es = lay.view(E, op.src)
        c_lo = (c - Ec) * (1 - 2 * _U)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.abs(op.coef * s / c)
            e = abs(float(op.coef)) * (Es / c_lo + np.abs(s) * Ec / (c_lo * c)) * (1 + 4 * _U) + _g(3) * q
            e = np.where(c_lo > 0, e, np.inf)
        if op.accumulate:
            old = lay.view(H, op.dst)
            e = _up(lay.view(E, op.dst) + e + _U * (np.abs(old) + q), 3)
        return e
    if isinstance(op, Count):
        return np.zeros(H.shape[:2] + (lay[op.dst].size,))
    if isinstance(op, Sum):
        is_y = (np.arange(T) % 2 == 1).astype(np.float64)[None, :, None]
        Es = np.cumsum(lay.view(E, op.src) * is_y, axis=1)
        S = np.cumsum(np.abs(lay.view(H, op.src)) * is_y, axis=1)
        return abs(float(op.scale)) * _up(Es + _g(T + 1) * S, T) * (1 + 2 * _U)
    raise TypeError(f"unknown op {op!r}")  # pragma: no cover


def _declared_contraction(program) -> Optional[Tuple[Tuple[str, ...], float]]:
    """``(state slots, Lipschitz constant)`` the program declares (``meta['contraction']``), or ``None``."""
    cfg = (getattr(program, "meta", None) or {}).get("contraction")
    return (tuple(cfg["slots"]), float(cfg["lipschitz"])) if cfg else None


def _guards_hold(program, tokens) -> bool:
    """Do the tokens pass the program's input guards strictly (the run-time check's slack would make a
    declared Lipschitz constant, e.g. SGD's step condition, slightly larger than declared)?"""
    from ..lang.checks import example_sq_norm_max

    guards = getattr(program, "guards", ())
    if not guards:
        return True
    tok = np.asarray(tokens, dtype=np.float64)
    sq = example_sq_norm_max(tok[None] if tok.ndim == 2 else tok)
    if sq is None:
        return True
    # the computed max ‖x‖² is within γ_{d+2} of the exact one; a guard's quantity grows with it
    sq_hi = sq * (1 + 2 * _g(np.shape(tokens)[-1] + 2))
    return not any(g.quantity(sq_hi) > g.limit for g in guards)


def _contraction(program, tokens) -> Optional[Tuple[Tuple[str, ...], float]]:
    """The declared contraction, if the tokens pass the program's input guards (which is what makes the
    declared Lipschitz constant true); else ``None`` (entrywise propagation)."""
    hint = _declared_contraction(program)
    return hint if hint is not None and _guards_hold(program, tokens) else None


def bounded_interpret(program, tokens, *, max_len: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(H, E)``: the interpreter's final hidden state on ``tokens`` (the values of
    :func:`~iclconstruct.lang.interpreter.interpret`, run without its range checks) and a rigorous
    entrywise bound ``E`` on ``|H − exact program|`` (module doc)."""
    from ..lang.interpreter import apply_op, embed_reference

    H = embed_reference(program, tokens, max_len=max_len, check=False)
    E = np.zeros_like(H)
    lay = program.layout
    hint = _contraction(program, tokens)
    T = H.shape[1]
    for seg in program.segments:
        times = seg.times(T) if seg.ops else 0
        carry = hint is not None and seg.repeat == "examples"
        # the loop body's other slots: bounded only relative to the iteration's computed state, so not
        # certified once the iteration is over (as in the a-priori certificate)
        scratch = {op.writes() for op in seg.ops} - set(hint[0]) if carry else set()
        e2 = {}  # contraction slot -> (B, T) 2-norm error bound after the last iteration
        for _ in range(times):
            if carry:  # the state's carried error (2-norm, worst column), then one iteration's own error
                e_in = {s: (e2[s] if s in e2 else np.sqrt(_up((lay.view(E, s) ** 2).sum(-1), lay[s].size))).max(axis=1)
                        for s in hint[0]}
                for s in hint[0]:
                    lay.view(E, s)[...] = 0.0
            for op in seg.ops:
                err = _op_error(op, H, E, lay)
                apply_op(op, H, lay)
                lay.view(E, op.writes())[...] = err
            if carry:
                for s in hint[0]:
                    own = np.sqrt(_up((lay.view(E, s) ** 2).sum(-1), lay[s].size))  # (B, T)
                    e2[s] = _up(hint[1] * e_in[s][:, None] + own, 2)
                    lay.view(E, s)[...] = e2[s][..., None]  # each entry is at most the 2-norm
                for s in scratch:  # errors relative to the computed state, not to the exact program
                    lay.view(E, s)[...] = np.inf
    return H, E


def recompute_bounds(program, tokens, columns: Sequence[int], y_hat) -> np.ndarray:
    """Rigorous bounds ``(B, C)`` on ``|ŷ − exact program readout|`` at token ``columns`` for the
    model's readout ``y_hat`` ``(B, C)`` there (``inf`` where a value is not finite)."""
    from ..lang.interpreter import readout  # noqa: F401 - the same readout row

    H, E = bounded_interpret(program, tokens, max_len=getattr(program, "max_len", None))
    return readout_bounds(program, H, E, columns, y_hat)


def readout_bounds(program, H: np.ndarray, E: np.ndarray, columns: Sequence[int], y_hat) -> np.ndarray:
    """``|ŷ − ŷ_ref| + E_ref`` at ``columns`` (rounded up), from a bounded run ``(H, E)``."""
    row = program.layout.row(program.readout_slot)
    cols = np.asarray(columns, dtype=np.int64)
    ref, err = H[:, cols, row], E[:, cols, row]
    yh = np.asarray(y_hat, dtype=np.float64).reshape(ref.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        out = (np.abs(yh - ref) + err) * (1 + 4 * _U) + _TINY
    return np.where(np.isfinite(out), out, np.inf)
