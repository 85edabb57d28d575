"""Adversarial search for a compiled model's worst error, to measure a certificate's tightness.

The certificate (:mod:`iclconstruct.numerics.certificate`) is an upper bound over every
admissible input; this module searches for inputs that make the error large: first the
corners of the input box (every ``x_i`` and ``y`` at ``±`` its bound, scaled into any
guard such as the SGD step condition), Gaussian contexts, and contexts that repeat one corner
example (whose rounding errors then add up coherently from step to step), then a few rounds of local search that perturb the
best inputs and keep what increases ``|model − exact|``. The ratio
``certificate / worst found`` is the tightness reported in ``docs/certificate.md``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..errors import ICLConstructError, PrecisionError
from ..lang.guards import InputGuard
from ..lang.interpreter import apply_op, embed_reference, interpret
from ..lang.ops import Div
from ..tokens import encode

__all__ = ["worst_error", "Found"]


@dataclass
class Found:
    """Result of :func:`worst_error`: the largest admissible error found and the tokens that give it
    (``None`` when every candidate was refused); ``refused``: candidates among the worst the model
    refused although the exact program runs (range checks, or — with ``served=True`` — the a-posteriori
    check)."""

    error: float
    tokens: np.ndarray
    evaluated: int
    refused: int


def _project(X, y, xq, xb, yb, guards):
    X = np.clip(X, -xb, xb)
    xq = np.clip(xq, -xb, xb)
    y = np.clip(y, -yb, yb)
    for g in guards:
        if isinstance(g, InputGuard):
            cap = g.limit / g.scale - g.shift  # ‖x‖² the guard allows
            sq = (X * X).sum(-1, keepdims=True)
            X = np.where(sq > cap, X * np.sqrt(max(cap, 0.0) / np.maximum(sq, 1e-300)) * (1 - 1e-5), X)
    return X, y, xq


def _admissible(program, tok: np.ndarray, div_min: float, max_len: int) -> np.ndarray:
    """Per sample: does the exact run stay within every slot's bound, with divisors ``≥ div_min``?"""
    lay = program.layout
    H = embed_reference(program, tok, check=False, max_len=max_len)
    ok = np.ones(H.shape[0], dtype=bool)
    T = H.shape[1]
    for seg in program.segments:
        for _ in range(seg.times(T) if seg.ops else 0):
            for op in seg.ops:
                if isinstance(op, Div):
                    ok &= np.abs(lay.view(H, op.divisor)).reshape(H.shape[0], -1).min(axis=1) >= div_min
                apply_op(op, H, lay)
                v = np.abs(lay.view(H, op.writes())).reshape(H.shape[0], -1)
                ok &= np.isfinite(v).all(axis=1) & (v.max(axis=1, initial=0.0) <= lay[op.writes()].bound)
    return ok


def _errors(model, tok: np.ndarray) -> np.ndarray:
    """Per-sample ``max |model − exact|`` with the run-time checks off; −1 where the exact run is inadmissible."""
    with torch.no_grad():
        out = model(torch.as_tensor(tok), check=False).double().numpy()
    exact = interpret(model.program, tok, check=False, max_len=model.max_len).output
    err = np.abs(out - exact)
    err = np.where(np.isfinite(err), err, np.inf)
    err = err.reshape(err.shape[0], -1).max(axis=1)
    return np.where(_admissible(model.program, tok, model.constants.div_min, model.max_len), err, -1.0)


def _valid_error(model, tok1: np.ndarray, served: bool = True) -> Optional[float]:
    """The error of one sample with every check on, or ``None`` if the exact program refuses it, ``-1`` if
    the model does.

    ``served=False``: an input that passes every range check but that the a-posteriori check then
    refuses (``PrecisionError``: ridge's residual bound, or float32's recomputation, raised only after
    every range check passed) counts with its unchecked error — it is inside the certificate's domain."""
    try:
        exact = interpret(model.program, tok1, max_len=model.max_len).output
    except ICLConstructError:
        return None
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(tok1)).double().numpy()
    except PrecisionError:
        if served:
            return -1.0  # a correct refusal of an inaccurate answer — not an error the model makes
        with torch.no_grad():
            out = model(torch.as_tensor(tok1), check=False).double().numpy()
    except ICLConstructError:
        return -1.0  # the exact run is fine but a range check refuses it (spurious) — not an error
    return float(np.abs(out - exact).max())


def worst_error(model, n_examples: int, *, corners: int = 64, rounds: int = 8, batch: int = 32,
                step: float = 0.1, seed: int = 0, validate: int = 32, served: bool = True) -> Found:
    """Search inputs with ``n_examples`` examples for the largest ``|model − exact|`` the checks let through.

    The search runs with the checks off; the worst candidates are then rerun with every check on, from the
    worst down, until ``validate`` of them are served (at most ``4·validate`` tried), and the largest error
    among those the model serves is reported (``refused``: how many of those tried the model refused).
    ``served=False`` measures the certificate's domain instead: inputs that pass the range checks count
    even where the a-posteriori check (ridge's, float32's recomputation) then refuses the answer."""
    lay = model.layout
    d = lay.d
    xb, yb = lay["x"].bound, lay["y"].bound
    guards = list(getattr(model.program, "guards", ()))
    rng = np.random.default_rng(seed)
    B = corners
    X = rng.choice([-1.0, 1.0], size=(B, n_examples, d)) * xb
    y = rng.choice([-1.0, 1.0], size=(B, n_examples)) * yb * rng.uniform(0.0, 1.0, size=(B, 1))
    xq = rng.choice([-1.0, 1.0], size=(B, d)) * xb
    # a few realistic starts too: Gaussian data with labels from a planted w
    k = B // 2
    X[:k] = rng.standard_normal((k, n_examples, d)) * xb / 3
    w = rng.standard_normal((k, d))
    y[:k] = np.einsum("bnd,bd->bn", X[:k], w)
    # and one example repeated: every step then meets (nearly) the same state and makes (nearly) the same
    # rounding errors, which add up coherently where a contraction does not damp them (SGD: off x's span)
    r = (B - k) // 2
    X[k:k + r] = X[k:k + r, :1]
    y[k:k + r] = y[k:k + r, :1] * rng.choice([0.0, 1.0], size=(r, 1))
    X, y, xq = _project(X, y, xq, xb, yb, guards)
    errs = _errors(model, encode(X, y, xq))
    evaluated = B
    for _ in range(rounds):
        top = np.argsort(-errs)[:batch]
        # half the moves shift every example alike (a repeated example stays repeated), half independently
        shared = rng.random((len(top), 1, 1)) < 0.5
        nx = np.where(shared, rng.standard_normal((len(top), 1, d)), rng.standard_normal(X[top].shape))
        ny = np.where(shared[:, :, 0], rng.standard_normal((len(top), 1)), rng.standard_normal(y[top].shape))
        Xc = X[top] + nx * step * xb
        yc = y[top] + ny * step * yb
        qc = xq[top] + rng.standard_normal(xq[top].shape) * step * xb
        Xc, yc, qc = _project(Xc, yc, qc, xb, yb, guards)
        ec = _errors(model, encode(Xc, yc, qc))
        evaluated += len(top)
        X, y, xq = np.concatenate([X, Xc]), np.concatenate([y, yc]), np.concatenate([xq, qc])
        errs = np.concatenate([errs, ec])
    best, best_tok, refused, n_served = -1.0, None, 0, 0
    for i in np.argsort(-errs)[:4 * validate]:  # the worst first, until `validate` of them are served
        if n_served >= validate or errs[i] < 0:
            break
        tok1 = encode(X[i : i + 1], y[i : i + 1], xq[i : i + 1])
        e = _valid_error(model, tok1, served)
        if e is None:
            continue
        if e < 0:
            refused += 1
            continue
        n_served += 1
        if e > best:
            best, best_tok = e, tok1
    return Found(error=max(best, 0.0), tokens=best_tok, evaluated=evaluated, refused=refused)
