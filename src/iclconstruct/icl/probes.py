"""Probing hidden states for intermediate quantities (Akyürek et al. 2023, §5, Fig. 4–5).

The paper asks whether ``XᵀY`` and ``w_OLS`` can be decoded from a layer's hidden states.
Its probe learns input-independent position weights ``α = softmax(s)`` over the ``T`` columns,
pools ``αᵀ W_v H⁽ˡ⁾`` and maps the result through ``FF`` (linear or a 2-layer GeLU MLP),
trained with Adam on ``‖v − v̂‖²``. :func:`fit_position_probe` implements it;
:func:`fit_linear_readout` is the closed-form alternative (ridge regression from the hidden
state at one column to the target).

Everything takes **generic hidden states**: a list of per-layer tensors ``(B, T, D)`` and a
target ``(B, k)``, so the same code probes trained models (:func:`model_hidden_states`) and the
constructed circuits (whose residual stream holds ``XᵀY`` or ``w`` in a known slot).
Errors are reported as relative MSE on held-out sequences,
``Σ‖v − v̂‖² / Σ‖v − v̄‖²`` (0 = perfectly decodable, ≈1 = nothing better than the mean).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .. import reference as ref
from .. import tokens as _tokens
from ..errors import OutOfRangeError, ShapeError

__all__ = ["ProbeResult", "PositionProbe", "probe_target", "fit_position_probe", "fit_linear_readout",
           "probe_layers", "model_hidden_states", "circuit_hidden_states", "TARGETS"]

TARGETS = ("xty", "w_ols", "y_query", "w_ridge:LAM", "w_newton:K")


def probe_target(X, y, kind: str, x_query=None, w=None) -> np.ndarray:
    """Probe targets of paper §5: ``"xty"`` = ``XᵀY`` (B, d); ``"w_ols"`` = min-norm OLS weights (B, d).

    ``"y_query"`` = ``wᵀx_q`` (B, 1), the quantity the model must output — a positive control
    (needs ``x_query`` and the true ``w``). ``"w_ridge:LAM"`` = ridge weights ``(XᵀX + LAM·I)⁻¹Xᵀy``
    (what the ridge circuit holds in a slot: the probe's ground truth). ``"w_newton:K"`` = ``K``
    steps of iterative Newton from the in-context start ``alpha = 1/(n + tr XᵀX)²``
    (:func:`iclconstruct.reference.newton` with ``alpha="trace"``: what ``ic.circuits.newton(d, K)`` holds).
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64)
    if kind == "y_query":
        if x_query is None or w is None:
            raise OutOfRangeError("probe target 'y_query' needs x_query and the true w")
        return np.einsum("bd,bd->b", np.asarray(w, np.float64), np.asarray(x_query, np.float64))[:, None]
    if kind == "xty":
        return np.einsum("bnd,bn->bd", X, y)
    if kind == "w_ols":
        return ref.ols(X, y)
    if isinstance(kind, str) and kind.startswith("w_ridge:"):
        from fractions import Fraction

        try:
            lam = float(Fraction(kind.split(":", 1)[1]))
        except (ValueError, ZeroDivisionError):
            raise OutOfRangeError(f"probe target {kind!r}: write w_ridge:LAM with a number LAM > 0") from None
        return ref.ridge(X, y, lam)
    if isinstance(kind, str) and kind.startswith("w_newton:"):
        k = kind.split(":", 1)[1]
        if not k.isdigit() or int(k) < 1:
            raise OutOfRangeError(f"probe target {kind!r}: write w_newton:K with a whole number of steps K >= 1")
        return ref.newton(X, y, int(k), alpha="trace")
    raise OutOfRangeError(f"probe target must be one of {TARGETS}; got {kind!r}")


@dataclass
class ProbeResult:
    layer: int
    method: str  # "linear", "mlp" (position probes) or "readout" (closed form)
    target: str
    test_rel_err: float
    train_rel_err: float
    alpha: Optional[np.ndarray] = None  # learned position weights (position probes)

    def as_row(self) -> dict:
        return dict(layer=self.layer, method=self.method, target=self.target,
                    test_rel_err=self.test_rel_err, train_rel_err=self.train_rel_err)


class PositionProbe(nn.Module):
    """``v̂ = FF(αᵀ W_v H)`` with ``α = softmax(s)`` learned per position (paper §5)."""

    def __init__(self, T: int, D: int, k: int, hidden: str = "linear", value_dim: Optional[int] = None):
        super().__init__()
        if hidden not in ("linear", "mlp"):
            raise OutOfRangeError(f"hidden must be 'linear' or 'mlp'; got {hidden!r}")
        value_dim = value_dim or D
        self.s = nn.Parameter(torch.zeros(T))
        self.W_v = nn.Linear(D, value_dim, bias=False)
        self.ff = nn.Linear(value_dim, k) if hidden == "linear" else nn.Sequential(
            nn.Linear(value_dim, 4 * value_dim), nn.GELU(), nn.Linear(4 * value_dim, k))

    def alpha(self) -> torch.Tensor:
        return torch.softmax(self.s, dim=0)

    def forward(self, H: torch.Tensor) -> torch.Tensor:
        pooled = torch.einsum("t,btd->bd", self.alpha(), H)
        return self.ff(self.W_v(pooled))


def _split(B: int, test_frac: float, seed: int):
    if not 0 < test_frac < 1:
        raise OutOfRangeError(f"test_frac must be in (0, 1); got {test_frac}")
    n_test = max(1, int(round(B * test_frac)))
    if B - n_test < 2:
        raise ShapeError(f"need more sequences to probe (got B = {B}); pass at least 8")
    perm = np.random.default_rng(seed).permutation(B)
    return perm[n_test:], perm[:n_test]


def _rel_err(v: np.ndarray, v_hat: np.ndarray, mean: np.ndarray) -> float:
    return float(np.sum((v - v_hat) ** 2) / max(np.sum((v - mean) ** 2), 1e-300))


def _check_pair(H, target):
    H = torch.as_tensor(np.asarray(H.detach().cpu() if torch.is_tensor(H) else H, dtype=np.float64))
    v = np.asarray(target.detach().cpu() if torch.is_tensor(target) else target, dtype=np.float64)
    if H.dim() != 3:
        raise ShapeError(f"hidden state must be (B, T, D); got {tuple(H.shape)}")
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2 or v.shape[0] != H.shape[0]:
        raise ShapeError(f"target must be (B, k) with B = {H.shape[0]}; got {v.shape}")
    if not (torch.isfinite(H).all() and np.all(np.isfinite(v))):
        from ..errors import NonFiniteError

        raise NonFiniteError("hidden states or targets contain NaN/inf; probe finite activations")
    return H, v


def fit_position_probe(H, target, hidden: str = "linear", steps: int = 400, lr: float = 1e-2,
                       test_frac: float = 0.25, seed: int = 0, layer: int = -1, target_name: str = "target",
                       weight_decay: float = 1e-3, val_frac: float = 0.15, eval_every: int = 10) -> ProbeResult:
    """Train the paper's position-attention probe on ``H (B, T, D)`` → ``target (B, k)`` (full-batch Adam).

    Hidden channels and targets are standardised on the training split. A further ``val_frac``
    of the training sequences is held out for early stopping (the parameters with the lowest
    validation loss, checked every ``eval_every`` steps, are kept), so an over-parameterised MLP
    probe cannot score worse than predicting the mean by much. The error is the held-out
    (test split) relative MSE in the target's own units.
    """
    H, v = _check_pair(H, target)
    tr, te = _split(H.shape[0], test_frac, seed)
    n_val = max(1, int(round(len(tr) * val_frac)))
    fit, val = tr[n_val:], tr[:n_val]
    mu, sd = H[fit].mean(dim=(0, 1)), H[fit].std(dim=(0, 1)) + 1e-6
    Hs = ((H - mu) / sd).float()
    vm, vs = v[fit].mean(0), v[fit].std(0) + 1e-12
    vt = torch.as_tensor((v - vm) / vs, dtype=torch.float32)
    torch.manual_seed(seed)
    probe = PositionProbe(H.shape[1], H.shape[2], v.shape[1], hidden)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    fit_t, val_t = torch.as_tensor(fit), torch.as_tensor(val)
    H_fit, v_fit, H_val, v_val = Hs[fit_t], vt[fit_t], Hs[val_t], vt[val_t]
    best, best_state = float("inf"), None
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                vl = ((probe(H_val) - v_val) ** 2).sum(dim=1).mean().item()
            if vl < best:
                best, best_state = vl, {k: t.clone() for k, t in probe.state_dict().items()}
        if step == steps:
            break
        loss = ((probe(H_fit) - v_fit) ** 2).sum(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    probe.load_state_dict(best_state)
    with torch.no_grad():
        v_hat = probe(Hs).double().numpy() * vs + vm
    return ProbeResult(layer, hidden, target_name, _rel_err(v[te], v_hat[te], vm), _rel_err(v[tr], v_hat[tr], vm),
                       probe.alpha().detach().numpy())


def fit_linear_readout(H, target, column: int = -1, lam: float = 1e-3, test_frac: float = 0.25, seed: int = 0,
                       layer: int = -1, target_name: str = "target") -> ProbeResult:
    """Closed-form ridge readout from the hidden state at ``column`` to the target (float64).

    ``v̂ = [h, 1] B`` with ``B = argmin ‖[H, 1] B − V‖² + lam·N·‖B‖²`` on standardised channels.
    """
    H, v = _check_pair(H, target)
    h = H[:, column].numpy()
    tr, te = _split(h.shape[0], test_frac, seed)
    mu, sd = h[tr].mean(0), h[tr].std(0) + 1e-9
    Z = np.concatenate([(h - mu) / sd, np.ones((h.shape[0], 1))], axis=1)
    A = Z[tr].T @ Z[tr] + lam * len(tr) * np.eye(Z.shape[1])
    Bm = np.linalg.solve(A, Z[tr].T @ v[tr])
    v_hat = Z @ Bm
    vm = v[tr].mean(0)
    return ProbeResult(layer, "readout", target_name, _rel_err(v[te], v_hat[te], vm), _rel_err(v[tr], v_hat[tr], vm))


def probe_layers(hidden_states: Sequence, targets: Union[Dict[str, np.ndarray], np.ndarray],
                 methods: Sequence[str] = ("linear", "mlp", "readout"), steps: int = 400, seed: int = 0,
                 column: int = -1) -> List[ProbeResult]:
    """Probe every layer for every target with every method.

    Args:
        hidden_states: list of per-layer tensors ``(B, T, D)`` (index = layer; 0 = embedding).
        targets: ``{name: (B, k)}`` or one ``(B, k)`` array (named "target").
        methods: any of "linear", "mlp" (position probes) and "readout" (closed-form at ``column``).
    """
    if not isinstance(targets, dict):
        targets = {"target": targets}
    out: List[ProbeResult] = []
    for layer, H in enumerate(hidden_states):
        for tname, v in targets.items():
            for m in methods:
                if m == "readout":
                    out.append(fit_linear_readout(H, v, column=column, seed=seed, layer=layer, target_name=tname))
                elif m in ("linear", "mlp"):
                    out.append(fit_position_probe(H, v, hidden=m, steps=steps, seed=seed, layer=layer, target_name=tname))
                else:
                    raise OutOfRangeError(f"probe method must be 'linear', 'mlp' or 'readout'; got {m!r}")
    return out


@torch.no_grad()
def model_hidden_states(model, X, y, x_query=None) -> List[torch.Tensor]:
    """Residual stream of a trained :class:`ICLTransformer` on ``encode(X, y, x_query)``: L+1 tensors."""
    p = next(model.parameters())
    tok = torch.as_tensor(_tokens.encode(np.asarray(X, np.float64), np.asarray(y, np.float64),
                                         None if x_query is None else np.asarray(x_query, np.float64)), dtype=p.dtype)
    model.eval()
    return [h.cpu() for h in model.hidden_states(tok.to(p.device))]


@torch.no_grad()
def circuit_hidden_states(circuit, X, y, x_query=None) -> List[torch.Tensor]:
    """Residual stream of a compiled circuit (``ic.circuits.*``) on the same tokens: the state after
    every layer (``run_with_cache`` hook ``resid_post``), so circuits and trained learners go through
    one probing pipeline."""
    tok = _tokens.encode(np.asarray(X, np.float64), np.asarray(y, np.float64),
                         None if x_query is None else np.asarray(x_query, np.float64))
    _, cache = circuit.run_with_cache(tok, names_filter="*hook_resid_post")
    return [torch.as_tensor(cache.resid(l)).cpu() for l in range(cache.n_layers)]

