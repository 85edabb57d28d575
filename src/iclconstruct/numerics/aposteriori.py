"""A-posteriori error bounds: a rigorous per-input bound on the ridge circuit's predictions.

The a-priori certificate (:mod:`iclconstruct.numerics.certificate`) is ``inf`` for ridge:
Sherman–Morrison's recursion has no useful worst-case bound over the whole input box. After
a forward pass, however, the model's own residual stream holds its weight estimate ``ŵ`` at
every x̃ column (slot ``wq``: the ``w`` the readout multiplies with ``x̃``), and whether
``ŵ`` solves the ridge system can be checked cheaply on the host.

**The bound.** At an x̃ column after ``t`` examples ``X`` ``(t, d)``, ``y`` ``(t,)`` with
query ``x̃``, ridge with weight ``λ`` is ``w* = A⁻¹b`` with ``A = λI + XᵀX``, ``b = Xᵀy``.
For the model's readout ``ŷ`` and **any** vector ``ŵ``::

    ŷ − w*ᵀx̃ = (ŷ − ŵᵀx̃) − x̃ᵀ(w* − ŵ),   w* − ŵ = A⁻¹r,   r = b − Aŵ = Xᵀ(y − Xŵ) − λŵ

so ``|ŷ − w*ᵀx̃| ≤ |ŷ − ŵᵀx̃| + ‖x̃‖₂·‖r‖₂/λ_min(A)``  (1, the *residual bound*).

A second bound avoids the condition-number factor that (1) pays when ``r`` is not along
``A``'s smallest eigenvector: with ``z`` any float64 approximation of ``A⁻¹r`` (one
linear solve) and ``ρ = r − Az``, ``w* = ŵ + A⁻¹r = ŵ + z + A⁻¹ρ``, so
``|ŷ − w*ᵀx̃| ≤ |ŷ − ŵᵀx̃ − zᵀx̃| + ‖x̃‖₂·‖ρ‖₂/λ_min(A)``  (2, the *corrected bound*).
Both hold exactly; :func:`ridge_bounds` returns their minimum.

**λ_min(A).** ``A ⪰ λI``, so ``λ_min(A) ≥ λ`` always. Tighter, with ``G = XᵀX``: take a
shift ``s ≥ 0`` (99% of ``eigvalsh``'s smallest eigenvalue of the computed ``Ĝ``, an
estimate, used for nothing else) and run floating-point Cholesky on ``M̂ = fl(Ĝ − sI)``.
If it completes, ``R̂ᵀR̂ = M̂ + ΔM`` with ``|ΔM| ≤ γ_{d+1}|R̂ᵀ||R̂|`` (Demmel; Higham,
*Accuracy and Stability of Numerical Algorithms*, Thm 10.3), and
``‖|R̂ᵀ||R̂|‖₂ ≤ ‖R̂‖_F² ≤ tr(M̂)/(1 − γ_{d+1})``; so
``λ_min(M̂) ≥ −γ_{d+1}·tr(M̂)/(1 − γ_{d+1})`` (the code uses ``γ_{2d+2}``, headroom for
LAPACK's blocked evaluation order). With ``‖G − sI − M̂‖₂ ≤ γ_t‖P‖_F + 2u‖diag M̂‖₂``
(``P = |X|ᵀ|X|``, the round-off of the prefix sums and of the shift), Weyl's inequality gives
``λ_min(A) ≥ λ + max(0, s − γ_{d+1}tr(M̂)/(1−γ_{d+1}) − γ_t‖P‖_F − 2u‖diag M̂‖₂)``. If
Cholesky breaks down, ``λ`` is used.

**Round-off of the host computation** (float64, unit round-off ``u = 2⁻⁵³``,
``γ_k = ku/(1 − ku)``). Every term of ``r̂ = fl(b̂ − Ĝŵ − λŵ)`` (prefix sums ``b̂``, ``Ĝ``
by ``cumsum``, then ``Ĝŵ``, then two subtractions) passes through at most
``m = t + d + 4`` roundings, in any summation order and with or without FMA, so
``|r̂ − r| ≤ γ_m·(|X|ᵀ|y| + P|ŵ| + λ|ŵ|)`` componentwise; the same for
``ρ̂ = fl(r̂ − Ĝz − λz)``: ``|ρ̂ − (r̂ − Az)| ≤ γ_m·(|r̂| + P|z| + λ|z|)``; and
``|fl(ŵᵀx̃) − ŵᵀx̃| ≤ γ_d|ŵ|ᵀ|x̃|`` (with the subtractions from ``ŷ``: ``γ_{d+2}(|ŵ|ᵀ|x̃| + |ŷ|)``, and
``γ_{d+4}((|ŵ| + |z|)ᵀ|x̃| + |ŷ|)`` for (2)). Every remaining quantity is a sum, product, square
root or quotient of non-negative numbers formed by at most ``N = 2(t + d) + 64`` roundings,
so its exact value is at most ``(1 + 2γ_N)`` times the computed one; the final bound is
multiplied by that factor (and ``λ_min``'s lower bound rounded down), plus ``1e-300``
for gradual underflow.

Assumptions: IEEE-754 float64 with round-to-nearest on the host, conventional (not
Strassen-like) BLAS/LAPACK, no overflow. The target ``w*`` is ridge on the tokens as the
caller passed them (float64 values of numpy input; a float32 model's rounding of its inputs
is part of its error).

**Refusal.** A prediction is served only if ``bound ≤ acc·(1 + max(0, |ŷ| − bound))`` —
a lower estimate of ``acc·(1 + |ridge|)`` — with ``acc`` :data:`FLOAT64_RIDGE_ACCURACY` or
:data:`FLOAT32_RIDGE_ACCURACY` by the model's dtype; otherwise :class:`~iclconstruct.errors.PrecisionError`.
Where it is loose: the check refuses whenever it cannot *prove* the accuracy, and (1)/(2)
are pessimistic by ``‖x̃‖·‖A⁻¹ρ‖`` versus ``|x̃ᵀA⁻¹ρ|`` (direction), which for float64
residuals is far below the stated accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import PrecisionError

__all__ = ["FLOAT64_RIDGE_ACCURACY", "FLOAT32_RIDGE_ACCURACY", "Verification", "ridge_bounds", "spec_for",
           "ridge_spec", "accuracy_for", "verify_columns", "refuse", "host_tokens", "BOUNDS_ONLY",
           "verification_from_bounds"]

#: the ridge circuit's stated accuracy in float64: ``|ŷ − ridge| ≤ 1e-6·(1 + |ridge|)``
FLOAT64_RIDGE_ACCURACY = 1e-6
#: the ridge circuit's stated accuracy in float32: ``|ŷ − ridge| ≤ 1e-2·(1 + |ridge|)``
FLOAT32_RIDGE_ACCURACY = 1e-2

_U = 2.0 ** -53
_TINY = 1e-300


def _gamma(k) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    return k * _U / (1.0 - k * _U)


def ridge_spec(lam: float, weights: str = "wq") -> dict:
    """``program.meta['aposteriori']`` of a ridge program: the check as data (saved with the program)."""
    return {"kind": "ridge", "lam": float(lam), "weights": weights,
            "accuracy": {"float64": FLOAT64_RIDGE_ACCURACY, "float32": FLOAT32_RIDGE_ACCURACY}}


def spec_for(program) -> Optional[dict]:
    """The a-posteriori check a program declares (``meta['aposteriori']``), or ``None``.

    Ridge programs saved before the check existed (``meta['circuit'] == 'ridge'`` with a
    ``wq`` slot) get it too, so loading an old file does not switch it off."""
    meta = getattr(program, "meta", None) or {}
    spec = meta.get("aposteriori")
    if spec is None and meta.get("circuit") == "ridge" and "lam" in meta and "wq" in program.layout:
        spec = ridge_spec(meta["lam"])
    if spec is None or spec.get("kind") not in ("ridge", "recompute"):
        return None
    return spec


#: what ``model.verify`` uses for a program that declares no check: bounds by recomputation, no stated accuracy
BOUNDS_ONLY = {"kind": "recompute", "accuracy": {}}


def accuracy_for(spec: dict, dtype: torch.dtype) -> Optional[float]:
    """The stated relative accuracy for a model of ``dtype`` (``None``: the check states none for that dtype,
    and a model of it is not refused; only the recomputation check leaves a dtype out)."""
    acc = spec.get("accuracy") or {}
    key = str(dtype).replace("torch.", "")
    if spec.get("kind") == "recompute":
        return float(acc[key]) if key in acc else None
    return float(acc.get(key, FLOAT64_RIDGE_ACCURACY if dtype == torch.float64 else FLOAT32_RIDGE_ACCURACY))


@dataclass
class Verification:
    """Per-prediction a-posteriori bounds (from ``model.verify``).

    Attributes:
        predictions: ``(B, C)`` the model's readout ``ŷ`` at the verified x̃ columns.
        bounds: ``(B, C)`` rigorous upper bounds on ``|ŷ − exact|``: ridge on the same prefix for the
            ridge circuit, the exact program's readout for the others (:mod:`~iclconstruct.numerics.recompute`).
        tolerance: ``(B, C)`` the stated accuracy ``acc·(1 + max(0, |ŷ| − bound))`` (``inf`` where the
            model states none: such a model is never refused).
        columns: ``(C,)`` token columns; ``examples``: ``(C,)`` examples before each.
        accuracy: ``acc`` (``None``: none stated for this dtype); dtype: the model's dtype;
        kind: ``'ridge'`` (residual bound) or ``'recompute'`` (the interpreter with a running error bound).
    """

    predictions: np.ndarray
    bounds: np.ndarray
    tolerance: np.ndarray
    columns: np.ndarray
    examples: np.ndarray
    accuracy: Optional[float]
    dtype: torch.dtype
    kind: str = "ridge"

    @property
    def ok(self) -> np.ndarray:
        """``(B, C)``: the prediction is proven within the stated accuracy."""
        return self.bounds <= self.tolerance

    @property
    def max_bound(self) -> float:
        return float(self.bounds.max()) if self.bounds.size else 0.0


def _host(a) -> np.ndarray:
    """A tensor or array as float64 numpy on the host."""
    return a.detach().to("cpu", torch.float64).numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)


def _tolerance(acc: float, yh: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``acc·(1 + max(0, |ŷ| − bound))`` rounded down: a lower estimate of ``acc·(1 + |exact|)``."""
    with np.errstate(invalid="ignore"):
        tol = acc * (1.0 + np.maximum(np.abs(yh) - bounds, 0.0)) * (1 - 4 * _U)
    return np.where(np.isfinite(tol), tol, acc)


def host_tokens(tokens) -> np.ndarray:
    """The caller's tokens as float64 numpy ``(B, T, d+1)`` (exact for float32/float64 input)."""
    t = _host(tokens)
    return t[None] if t.ndim == 2 else t


def _cholesky_ok(M: np.ndarray) -> np.ndarray:
    """Per matrix of the stack ``M``: did floating-point Cholesky complete?"""
    ok = np.zeros(M.shape[0], dtype=bool)
    if not M.shape[0]:
        return ok
    try:
        np.linalg.cholesky(M)
        ok[:] = True
    except np.linalg.LinAlgError:
        for i in range(M.shape[0]):
            try:
                np.linalg.cholesky(M[i])
                ok[i] = True
            except np.linalg.LinAlgError:
                pass
    return ok


def _lam_min_lower(G: np.ndarray, P: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    """Rigorous lower bounds on ``λ_min(λI + XᵀX)`` for stacks ``G = fl(XᵀX)``, ``P = fl(|X|ᵀ|X|)``
    ``(..., d, d)`` with ``t`` ``(...)`` examples each (see the module doc)."""
    shape = G.shape[:-2]
    d = G.shape[-1]
    Gf = G.reshape(-1, d, d)
    Pf = P.reshape(-1, d, d)
    tf = np.broadcast_to(t, shape).reshape(-1)
    out = np.full(Gf.shape[0], float(lam))
    tr = np.trace(Gf, axis1=-2, axis2=-1)
    cand = np.nonzero(tf >= d)[0]  # fewer examples than d: XᵀX is singular, λ is the bound
    if len(cand):
        mu = np.linalg.eigvalsh(Gf[cand])[:, 0]
        keep = mu > 1e-10 * np.maximum(tr[cand], _TINY)
        cand, mu = cand[keep], mu[keep]
    if len(cand):
        s = 0.99 * mu
        M = Gf[cand] - s[:, None, None] * np.eye(d)
        ok = _cholesky_ok(M)
        g1 = _gamma(2 * (d + 1))  # Demmel's γ_{d+1}, doubled: headroom for LAPACK's blocked ordering
        trM = np.trace(M, axis1=-2, axis2=-1)
        diagM = np.sqrt((np.diagonal(M, axis1=-2, axis2=-1) ** 2).sum(-1))
        PF = np.sqrt((Pf[cand] ** 2).sum((-2, -1)))
        N = 2 * (tf[cand] + d) + 64
        margin = (g1 * trM / (1 - g1) + _gamma(tf[cand]) * PF + 2 * _U * diagM) * (1 + 2 * _gamma(N))
        gain = np.maximum((s - margin) * (1 - 4 * _U), 0.0)
        out[cand] = np.where(ok, (lam + gain) * (1 - 2 * _U), out[cand])
    return np.maximum(out, lam * (1 - 2 * _U)).reshape(shape)


def ridge_bounds(tokens: np.ndarray, columns: Sequence[int], w_hat: np.ndarray, y_hat: np.ndarray,
                 lam: float, *, corrected: bool = True) -> np.ndarray:
    """Rigorous bounds on ``|ŷ − ridge(prefix)ᵀx̃|`` at x̃ ``columns`` (even indices).

    Args:
        tokens: ``(B, T, d+1)`` float64, the paper's layout (x̃ columns ``[0; x]``, ỹ columns ``[y; 0]``).
        columns: ``(C,)`` x̃ columns; column ``2k`` follows ``k`` examples.
        w_hat: ``(B, C, d)`` the model's weights at those columns; ``y_hat``: ``(B, C)`` its readout.
        lam: the ridge weight ``λ > 0``.
        corrected: the minimum of bounds (1) and (2) (default), else the residual bound (1) alone.
    Returns ``(B, C)`` float64 (``inf`` where an input is not finite).
    """
    tok = np.asarray(tokens, dtype=np.float64)
    cols = np.asarray(columns, dtype=np.int64)
    w = np.asarray(w_hat, dtype=np.float64)
    yh = np.asarray(y_hat, dtype=np.float64)
    B, T, d1 = tok.shape
    d = d1 - 1
    k = cols // 2
    K = int(k.max()) if len(k) else 0
    X = tok[:, 0 : 2 * K : 2, 1:]          # (B, K, d)
    Y = tok[:, 1 : 2 * K : 2, 0]           # (B, K)
    xq = tok[:, cols, 1:]                  # (B, C, d)
    aX, aY = np.abs(X), np.abs(Y)

    def prefix(v):  # exclusive prefix sums over examples, at the columns' counts
        z = np.zeros((B, 1) + v.shape[2:])
        return np.concatenate([z, np.cumsum(v, axis=1)], axis=1)[:, k]

    G = prefix(X[..., :, None] * X[..., None, :])      # (B, C, d, d)
    P = prefix(aX[..., :, None] * aX[..., None, :])
    bv = prefix(X * Y[..., None])                      # (B, C, d)
    q = prefix(aX * aY[..., None])
    lam = float(lam)
    m = k + d + 4                                      # roundings per term of r̂ and ρ̂
    gm = _gamma(m)[None, :, None]
    aw = np.abs(w)

    r = bv - np.einsum("bcij,bcj->bci", G, w) - lam * w
    dr = gm * (q + np.einsum("bcij,bcj->bci", P, aw) + lam * aw)
    nr = np.sqrt((r * r).sum(-1)) + np.sqrt((dr * dr).sum(-1))

    lam_lo = _lam_min_lower(G, P, np.broadcast_to(k, (B, len(k))), lam)
    nx = np.sqrt((xq * xq).sum(-1))
    s = np.einsum("bci,bci->bc", w, xq)
    t1 = np.abs(yh - s) + _gamma(d + 2)[None] * (np.einsum("bci,bci->bc", aw, np.abs(xq)) + np.abs(yh))
    bound1 = t1 + nx * nr / lam_lo

    N = 2 * (k + d) + 64
    if not corrected:
        out = bound1 * (1 + 2 * _gamma(N))[None] + _TINY
        return np.where(np.isfinite(out), out, np.inf)

    # (2): one linear solve for z ≈ A⁻¹r̂, then the residual ρ of that solve: w* = ŵ + z + A⁻¹ρ
    A = G + lam * np.eye(d)
    try:
        z = np.linalg.solve(A, r[..., None])[..., 0]
    except np.linalg.LinAlgError:
        z = np.zeros_like(r)
    z = np.where(np.isfinite(z), z, 0.0)
    az = np.abs(z)
    rho = r - np.einsum("bcij,bcj->bci", G, z) - lam * z
    drho = gm * (np.abs(r) + np.einsum("bcij,bcj->bci", P, az) + lam * az)
    nrho = np.sqrt((rho * rho).sum(-1)) + np.sqrt((drho * drho).sum(-1)) + np.sqrt((dr * dr).sum(-1))
    s2 = np.einsum("bci,bci->bc", z, xq)
    t2 = np.abs(yh - s - s2) + _gamma(d + 4)[None] * (np.einsum("bci,bci->bc", aw + az, np.abs(xq)) + np.abs(yh))
    bound2 = t2 + nx * nrho / lam_lo

    out = np.minimum(bound1, bound2) * (1 + 2 * _gamma(N))[None] + _TINY
    return np.where(np.isfinite(out), out, np.inf)


def verify_columns(program, dtype: torch.dtype, tokens: np.ndarray, columns: Sequence[int], h_cols: torch.Tensor,
                   y_hat, spec: Optional[dict] = None, model=None) -> Optional[Verification]:
    """Bounds for the readout ``y_hat`` ``(B, C)`` at ``columns``, given the residual stream
    ``h_cols`` ``(B, C, D)`` there (the model's own ``ŵ``); ``None`` if ``program`` declares no check
    and no ``spec`` is given. ``model``: lets the recomputation of a single last column (a streamed
    prediction) run on the model's pruned schedule (:mod:`~iclconstruct.numerics.replay_bound`)."""
    spec = spec or spec_for(program)
    if spec is None:
        return None
    cols = np.asarray(columns, dtype=np.int64)
    if spec["kind"] == "recompute":
        return _verify_recompute(program, dtype, tokens, cols, y_hat, spec, model)
    w = program.layout.view(h_cols, spec["weights"])
    w = _host(w)
    yh = _host(y_hat)
    yh = yh.reshape(w.shape[:2])
    x_cols = cols % 2 == 0  # predictions live at x̃ columns; a ỹ column's readout (run_pruned's
    cols, w, yh = cols[x_cols], w[:, x_cols], yh[:, x_cols]  # readout='last' on even T) is none
    bounds = ridge_bounds(tokens, cols, w, yh, spec["lam"])
    acc = accuracy_for(spec, dtype)
    tol = _tolerance(acc, yh, bounds)
    return Verification(predictions=yh, bounds=bounds, tolerance=tol, columns=cols, examples=cols // 2,
                        accuracy=acc, dtype=dtype)


def _verify_recompute(program, dtype, tokens, cols, y_hat, spec, model=None) -> Verification:
    from .recompute import recompute_bounds

    yh = _host(y_hat)
    yh = yh.reshape(tokens.shape[0], len(cols))
    if program.readout_columns == "x":  # predictions live at x̃ columns (as for ridge, above)
        keep = cols % 2 == 0
        cols, yh = cols[keep], yh[:, keep]
    T = tokens.shape[1]
    loop = any(seg.repeat == "examples" for seg in program.segments)
    if model is not None and loop and len(cols) == 1 and int(cols[0]) == T - 1:
        # one prediction at the last column: only the cells it depends on, O(n) instead of the interpreter's O(n²)
        bounds = model._replay_bounds(tokens, yh)
    else:
        bounds = recompute_bounds(program, tokens, cols, yh)
    return _recompute_verification(dtype, cols, yh, bounds, spec)


def verification_from_bounds(program, dtype, columns, y_hat, bounds) -> Verification:
    """A :class:`Verification` of the recomputation kind from bounds computed elsewhere (a stream's replay)."""
    yh = _host(y_hat)
    cols = np.asarray(columns, dtype=np.int64)
    return _recompute_verification(dtype, cols, yh.reshape(-1, len(cols)), np.asarray(bounds), spec_for(program))


def _recompute_verification(dtype, cols, yh, bounds, spec) -> Verification:
    acc = accuracy_for(spec, dtype)
    tol = np.full_like(bounds, np.inf) if acc is None else _tolerance(acc, yh, bounds)
    return Verification(predictions=yh, bounds=bounds, tolerance=tol, columns=cols, examples=(cols + 1) // 2,
                        accuracy=acc, dtype=dtype, kind="recompute")


def refuse(program, v: Verification) -> None:
    """Raise :class:`PrecisionError` if a prediction of ``v`` is not proven within the stated accuracy (naming the worst)."""
    dtype = v.dtype
    bad = ~v.ok
    if bad.any():
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(bad, np.nan_to_num(v.bounds / v.tolerance, nan=np.inf), -np.inf)
        b, c = (int(i) for i in np.unravel_index(int(np.argmax(ratio)), ratio.shape))  # the worst one
        more = int(bad.sum()) - 1
        name = str(dtype).replace("torch.", "")
        other = "" if dtype == torch.float64 else "use dtype=torch.float64, "
        if v.kind == "recompute":
            raise PrecisionError(
                f"prediction {v.predictions[b, c]:.6g} (batch {b}, column {int(v.columns[c])}, after "
                f"{int(v.examples[c])} examples) is not provably within the stated {name} accuracy: it differs from "
                f"the exact program by up to {v.bounds[b, c]:.3g} (the float64 interpreter re-run with a rigorous "
                f"round-off bound), more than {v.accuracy:g}·(1 + max(0, |prediction| − bound)) = "
                f"{v.tolerance[b, c]:.3g}. {f'({more} more predictions refused.) ' if more else ''}"
                f"The {name} approximations (products, LayerNorm reads) lost accuracy on these inputs. To get an "
                f"answer: {other}keep the inputs further inside the declared bounds (x_bound, y_bound); "
                f"check=False skips this check")
        lam = spec_for(program)["lam"]
        cause = "Sherman–Morrison's recursion lost accuracy on these inputs."
        raise PrecisionError(
            f"ridge prediction {v.predictions[b, c]:.6g} (batch {b}, x̃ column {int(v.columns[c])}, after "
            f"{int(v.examples[c])} examples) is not provably within the stated {name} accuracy: its a-posteriori "
            f"error bound {v.bounds[b, c]:.3g} exceeds {v.accuracy:g}·(1 + |ridge|) as far as it can be "
            f"known, {v.accuracy:g}·(1 + max(0, |prediction| − bound)) = {v.tolerance[b, c]:.3g}. "
            f"{f'({more} more predictions refused.) ' if more else ''}{cause} To get an answer: {other}pass a larger lam (now lam={lam:g}), or better-conditioned inputs "
            f"(examples less collinear); check=False skips this check")
