"""One predictor interface for everything compared in the paper (§4, "Predictors").

A *predictor* is any object with ``predict(X, y, x_query) -> (B,)``: ``X (B, n, d)``,
``y (B, n)``, ``x_query (B, d)`` as numpy, result numpy float64. That covers

* the classical algorithms below, wrapping :mod:`iclconstruct.reference` (float64);
* trained :class:`~iclconstruct.icl.model.ICLTransformer` models;
* the compiled circuits (``ic.circuits.sgd(d, lr)``, ``ic.circuits.ridge(d, lam)``) and any
  other object with that method.

Linear predictors also expose ``weights(X, y) -> (B, d)`` so ILWD can use the exact ``w``
(paper §4.2). With no examples (``n = 0``) every classical predictor predicts 0 (the prior mean).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, List, Optional

import numpy as np

from .. import reference as ref
from ..errors import ShapeError

__all__ = [
    "LinearPredictor", "KNNPredictor", "NamedPredictor", "as_predictor", "name_of",
    "ols", "ridge", "bayes", "gd", "sgd", "knn", "averaging", "newton",
    "default_predictors", "predict_prefixes", "check_inputs",
]


def check_inputs(X, y, x_query):
    """Validate and convert predictor inputs to float64 numpy ``(B, n, d), (B, n), (B, d)``."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    q = np.asarray(x_query, dtype=np.float64)
    if X.ndim != 3 or y.shape != X.shape[:2] or q.shape != (X.shape[0], X.shape[2]):
        raise ShapeError(f"predict expects X (B, n, d), y (B, n), x_query (B, d); got {X.shape}, {y.shape}, {q.shape}")
    return X, y, q


def _fmt(v: float) -> str:
    if len(f"{v:g}") <= 4:
        return f"{v:g}"
    f = Fraction(v).limit_denominator(100)
    return f"{f.numerator}/{f.denominator}" if f.denominator != 1 and abs(float(f) - v) < 1e-12 else f"{v:g}"


class LinearPredictor:
    """A learning algorithm that outputs a weight vector ``w(X, y)``; predicts ``wᵀx_query``."""

    is_linear = True

    def __init__(self, name: str, fit: Callable[[np.ndarray, np.ndarray], np.ndarray]):
        self.name = name
        self._fit = fit

    def weights(self, X, y) -> np.ndarray:
        X = np.asarray(X, np.float64)
        y = np.asarray(y, np.float64)
        if X.shape[-2] == 0:
            return np.zeros(X.shape[:-2] + X.shape[-1:])
        return self._fit(X, y)

    def predict(self, X, y, x_query) -> np.ndarray:
        X, y, q = check_inputs(X, y, x_query)
        return np.einsum("bd,bd->b", self.weights(X, y), q)

    def __repr__(self) -> str:
        return f"<predictor {self.name}>"


class KNNPredictor:
    """k-nearest-neighbour regression (paper §4): not linear in ``x_query``."""

    is_linear = False

    def __init__(self, k: int = 3, weights: str = "uniform"):
        self.k, self.weighting = k, weights
        self.name = f"kNN(k={k})" if weights == "uniform" else f"kNN(k={k},1/r²)"

    def predict(self, X, y, x_query) -> np.ndarray:
        X, y, q = check_inputs(X, y, x_query)
        if X.shape[1] == 0:
            return np.zeros(X.shape[0])
        return ref.knn(X, y, q, k=self.k, weights=self.weighting)

    def __repr__(self) -> str:
        return f"<predictor {self.name}>"


class NamedPredictor:
    """Wraps any object with ``predict(X, y, x_query)`` (a model, a circuit) and gives it a name."""

    def __init__(self, obj, name: Optional[str] = None):
        if not callable(getattr(obj, "predict", None)):
            raise ShapeError(f"{type(obj).__name__} has no predict(X, y, x_query) method; it cannot be compared")
        self.obj = obj
        self.name = name or getattr(obj, "name", None) or type(obj).__name__
        self.is_linear = bool(getattr(obj, "is_linear", False))
        # advertise the optional fast paths only when the wrapped object has them
        if callable(getattr(obj, "weights", None)):
            self.weights = obj.weights
        if callable(getattr(obj, "predict_prefixes", None)):
            self.predict_prefixes = obj.predict_prefixes

    def predict(self, X, y, x_query) -> np.ndarray:
        X, y, q = check_inputs(X, y, x_query)
        out = self.obj.predict(X, y, q)
        out = np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float64).reshape(-1)
        if out.shape != (X.shape[0],):
            raise ShapeError(f"{self.name}.predict returned shape {out.shape}; expected ({X.shape[0]},)")
        return out

    def __repr__(self) -> str:
        return f"<predictor {self.name}>"


def as_predictor(obj, name: Optional[str] = None):
    """Return ``obj`` as a predictor with a ``.name`` (classical ones pass through unchanged)."""
    if isinstance(obj, (LinearPredictor, KNNPredictor)) and name is None:
        return obj
    return NamedPredictor(obj, name)


def name_of(p) -> str:
    return getattr(p, "name", None) or type(p).__name__


# ------------------------------------------------------------------ factories (paper §4)
def ols() -> LinearPredictor:
    """Minimum-norm least squares (:func:`iclconstruct.reference.ols`)."""
    return LinearPredictor("OLS", ref.ols)


def ridge(lam: float) -> LinearPredictor:
    """Ridge with ``XᵀX + lam·I`` (sum-of-squares); ``lam = 0`` gives OLS."""
    if lam == 0:
        return LinearPredictor("Ridge(0)", ref.ols)
    ref._check_scalar(lam, "lam", positive=True)
    return LinearPredictor(f"Ridge({_fmt(lam)})", lambda X, y: ref.ridge(X, y, lam))


def bayes(noise_var: float, prior_var: float = 1.0) -> LinearPredictor:
    """Bayes posterior mean = ridge with λ = σ²/τ² (paper Eq. 6)."""
    return LinearPredictor(f"Bayes(σ²={_fmt(noise_var)})", lambda X, y: ref.bayes(X, y, noise_var, prior_var))


def gd(lr: float, steps: int = 1) -> LinearPredictor:
    """``steps`` of full-batch GD from 0, ``w ← w − 2·lr·(XᵀXw − Xᵀy)`` (sum-of-squares)."""
    label = "GD" if steps == 1 else f"GD×{steps}"
    return LinearPredictor(f"{label}(lr={lr:g})", lambda X, y: ref.batch_gd(X, y, lr, steps=steps))


def sgd(lr: float) -> LinearPredictor:
    """One pass of SGD from 0, ``w ← w − 2·lr·(x xᵀw − y x)`` (sum-of-squares)."""
    return LinearPredictor(f"SGD(lr={lr:g})", lambda X, y: ref.sgd(X, y, lr))


def knn(k: int = 3, weights: str = "uniform") -> KNNPredictor:
    return KNNPredictor(k, weights)


def averaging() -> LinearPredictor:
    """``w = mean_i y_i x_i``."""
    return LinearPredictor("Averaging", ref.averaging)


def newton(steps: int = 3) -> LinearPredictor:
    """Iterative Newton (Fu et al. 2023) with the safe default start."""
    return LinearPredictor(f"Newton(k={steps})", lambda X, y: ref.newton(X, y, steps))


def default_predictors(noise_var: float = 0.0, prior_var: float = 1.0) -> List:
    """The paper's comparison set (empirical.md §Predictors)."""
    ps = [ols(), ridge(0.1), ridge(0.5)]
    if noise_var > 0:
        ps.append(bayes(noise_var, prior_var))
    ps += [gd(0.01), gd(0.02), sgd(0.01), sgd(0.03), newton(3), knn(3), knn(3, "inverse_square"), averaging()]
    return ps


def predict_prefixes(predictor, X, y) -> np.ndarray:
    """``out[:, k]`` = prediction for ``x_{k+1}`` from the first ``k`` examples, ``k = 0..n-1``.

    Uses the predictor's own ``predict_prefixes`` (one causal pass for transformers) when it has one.
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64)
    fast = getattr(predictor, "predict_prefixes", None)
    if callable(fast):
        return np.asarray(fast(X, y), dtype=np.float64)
    n = X.shape[1]
    return np.stack([np.asarray(predictor.predict(X[:, :k], y[:, :k], X[:, k]), np.float64) for k in range(n)], axis=1)
