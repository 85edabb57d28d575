"""The paper's token layout (Akyürek et al. 2023, Eq. 12).

For examples ``(x_1, y_1) ... (x_n, y_n)`` and a query ``x_q`` the columns are::

    x̃_1, ỹ_1, x̃_2, ỹ_2, ..., x̃_n, ỹ_n, x̃_q        x̃ = [0; x]   ỹ = [y; 0_d]

so channel 0 is the label channel and channels ``1..d`` hold ``x``. Tokens are
returned as ``(B, T, d + 1)`` with ``T = 2n + 1`` (batch first, then positions,
then channels, as PyTorch layers expect). Column ``2i`` is x̃_{i+1}; the prediction
made there uses the first ``i`` examples.
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch

from .errors import ArgumentError, NonFiniteError, ShapeError
from .lang.validate import as_real_array, as_real_tensor

Array = Union[np.ndarray, torch.Tensor]

__all__ = ["encode", "decode"]


def _as_tensor(a, name: str, dtype) -> torch.Tensor:
    if a is None:
        raise ArgumentError(f"{name} is missing (None); pass an array")
    if isinstance(a, torch.Tensor):
        t = as_real_tensor(a, name)
    else:
        t = torch.as_tensor(as_real_array(a, name))
    if dtype is not None:
        t = t.to(dtype)
    elif not torch.is_floating_point(t):
        t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise NonFiniteError(f"{name} contains NaN or infinity; pass finite values")
    return t


def encode(X: Array, y: Array, x_query: Array = None, *, dtype=None) -> Array:
    """Build the token sequence ``x̃_1, ỹ_1, ..., x̃_n, ỹ_n, x̃_q``.

    Args:
        X: inputs, ``(n, d)`` or ``(B, n, d)``. ``n`` may be 0 when ``x_query`` is given.
        y: labels, ``(n,)`` or ``(B, n)``.
        x_query: query input, ``(d,)`` or ``(B, d)``; ``None`` leaves it out (``T = 2n``).
        dtype: torch dtype of the result (default: the input's float dtype, float64 for numpy).

    Returns:
        ``(B, T, d + 1)`` tokens; numpy in gives numpy out, torch in gives torch out.
        An unbatched input still returns a batch of one.
    """
    numpy_in = not isinstance(X, torch.Tensor)
    if dtype is not None and dtype not in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        raise ArgumentError(f"dtype must be a torch floating dtype (torch.float64 or torch.float32); got {dtype!r}")
    Xt = _as_tensor(X, "X", dtype)
    yt = _as_tensor(y, "y", Xt.dtype)
    if Xt.dim() == 2:
        Xt = Xt.unsqueeze(0)
        if yt.dim() != 1:
            raise ShapeError(f"y must be (n,) when X is (n, d); got y of shape {tuple(yt.shape)}")
        yt = yt.unsqueeze(0)
    if Xt.dim() != 3:
        raise ShapeError(f"X must be (n, d) or (B, n, d); got shape {tuple(Xt.shape)}")
    B, n, d = Xt.shape
    if B == 0:
        raise ShapeError(f"X has batch size 0 (shape {tuple(Xt.shape)}); pass at least one task")
    if d < 1:
        raise ShapeError("X must have at least one feature column (d >= 1)")
    if yt.device != Xt.device:
        raise ArgumentError(f"y is on {yt.device} but X is on {Xt.device}; put them on the same device")
    if tuple(yt.shape) != (B, n):
        raise ShapeError(f"y must have shape {(B, n)} to match X {tuple(Xt.shape)}; got {tuple(yt.shape)}")
    T = 2 * n + (0 if x_query is None else 1)
    tok = Xt.new_zeros((B, T, d + 1))
    tok[:, 0 : 2 * n : 2, 1:] = Xt
    tok[:, 1 : 2 * n : 2, 0] = yt
    if x_query is not None:
        q = _as_tensor(x_query, "x_query", Xt.dtype)
        if q.dim() == 1:
            q = q.unsqueeze(0).expand(B, -1)
        if tuple(q.shape) != (B, d):
            raise ShapeError(f"x_query must have shape {(d,)} or {(B, d)} to match X; got {tuple(q.shape)}")
        tok[:, -1, 1:] = q
    if T == 0:
        raise ShapeError("nothing to encode: n = 0 and no x_query")
    return tok.numpy() if numpy_in else tok


def decode(tokens: Array) -> Tuple[Array, Array, Array]:
    """Inverse of :func:`encode`: ``(X, y, x_query)`` from ``(B, T, d+1)`` tokens (``x_query`` is None if T is even)."""
    t = tokens
    if not hasattr(t, "ndim") or not hasattr(t, "shape"):
        raise ArgumentError(f"tokens must be a numpy array or torch tensor (B, T, d+1); got {type(t).__name__}")
    if t.ndim != 3:
        raise ShapeError(f"tokens must be (B, T, d+1); got shape {tuple(t.shape)}")
    T = t.shape[1]
    n = T // 2
    X = t[:, 0 : 2 * n : 2, 1:]
    y = t[:, 1 : 2 * n : 2, 0]
    xq = t[:, -1, 1:] if T % 2 == 1 else None
    return X, y, xq

