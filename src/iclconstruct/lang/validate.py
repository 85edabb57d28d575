"""Argument validation shared by every public entry point (API, CLI, file loaders).

Each helper takes the value *and the name of the argument the caller passed*, and either
returns a clean Python/numpy/torch value or raises an
:class:`~iclconstruct.errors.ICLConstructError` subclass whose message names that argument
and says what to pass instead. The command line runs the same helpers as the API
(``iclconstruct circuit ridge --lam -5`` fails exactly like ``ic.circuits.ridge(4, -5)``), so
no input is served silently on one path and refused on the other.

Refused everywhere: ``None`` where a value is needed, strings and booleans where numbers
are needed, NaN and infinity, complex numbers (numpy would drop the imaginary part with a
mere warning), object and string arrays, tensors on the ``meta`` device (they hold no
data), empty batches and empty sequences.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import ArgumentError, NonFiniteError, ShapeError

__all__ = ["as_int", "as_n_examples", "as_float", "as_real_array", "as_real_tensor", "check_tokens_layout", "MAX_ROWS", "MAX_D",
           "MAX_LEN_LIMIT"]

#: largest residual width a program may reach (a compiled layer holds ``D × D`` matrices:
#: 65 536 rows are 34 GB per matrix in float64, far beyond any construction in the paper)
MAX_ROWS = 1 << 16
#: largest input dimension ``d``
MAX_D = 1 << 12
#: largest ``max_len`` (the embedding holds ``max_len × D`` position weights)
MAX_LEN_LIMIT = 1 << 20


def _kind(value) -> str:
    return type(value).__name__


def _plain_scalar(value, name: str, what: str, hint: str = ""):
    """Refuse booleans, None and strings; a one-element real tensor becomes its Python number."""
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, (str, bytes)):
        raise ArgumentError(f"{name} must be {what}; got {value!r} ({_kind(value)}){hint}")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.device.type == "meta":
            raise ArgumentError(f"{name} must be {what}; got a tensor of shape {tuple(value.shape)}{hint}")
        value = value.item()
    return value


def as_int(value, name: str, *, min: Optional[int] = None, max: Optional[int] = None) -> int:
    """``value`` as an ``int`` in ``[min, max]``; integral floats (``4.0``) are accepted."""
    value = _plain_scalar(value, name, "an integer")
    if isinstance(value, numbers.Integral):
        v = int(value)
    elif isinstance(value, numbers.Real):
        f = float(value)
        if not math.isfinite(f) or f != int(f):
            raise ArgumentError(f"{name} must be an integer; got {value!r}")
        v = int(f)
    else:
        raise ArgumentError(f"{name} must be an integer; got {value!r} ({_kind(value)})")
    if min is not None and v < min:
        raise ArgumentError(f"{name} must be >= {min}; got {v}")
    if max is not None and v > max:
        raise ArgumentError(f"{name} must be <= {max}; got {v}")
    return v


def as_n_examples(value, max_len: int, *, min: int = 0, error=ArgumentError, advice: str = "") -> int:
    """``n_examples`` as an ``int ≥ min`` whose ``2n + 1`` tokens fit a model compiled with ``max_len``.

    ``error``: the exception type raised (a subclass of ``ICLConstructError``, e.g. ``ExportError``);
    ``advice``: what to change when the context does not fit (default: the largest ``n_examples``).
    """
    try:
        n = as_int(value, "n_examples", min=min)
    except ArgumentError as e:
        raise error(str(e)) from None
    if 2 * n + 1 > max_len:
        raise error(f"n_examples={n} needs {2 * n + 1} tokens but the model was compiled with max_len={max_len}; "
                    + (advice or f"use at most n_examples={(max_len - 1) // 2}"))
    return n


def as_float(value, name: str, *, positive: bool = False, nonneg: bool = False, finite: bool = True,
             min: Optional[float] = None, max: Optional[float] = None, hint: str = "") -> float:
    """``value`` as a real ``float``: refuses None, strings, booleans, complex numbers and NaN
    (and infinity unless ``finite=False``); ``positive``/``nonneg``/``min``/``max`` bound it."""
    value = _plain_scalar(value, name, "a real number", hint)
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iuf":
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name} must be a real number; got {value!r} ({_kind(value)}){hint}")
    try:
        v = float(value)
    except OverflowError:  # an int too large for a float
        raise ArgumentError(f"{name} is too large to be a float; got {value!r}{hint}") from None
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ArgumentError(f"{name} must be a finite number; got {value!r}{hint}")
    if positive and not v > 0:
        raise ArgumentError(f"{name} must be > 0; got {value!r}{hint}")
    if nonneg and not v >= 0:
        raise ArgumentError(f"{name} must be >= 0; got {value!r}{hint}")
    if min is not None and v < min:
        raise ArgumentError(f"{name} must be >= {min:g}; got {value!r}{hint}")
    if max is not None and v > max:
        raise ArgumentError(f"{name} must be <= {max:g}; got {value!r}{hint}")
    return v


def as_real_array(value, name: str, *, ndims: Optional[Sequence[int]] = None) -> np.ndarray:
    """``value`` as a float64 numpy array of real numbers (no complex, object, string or bool data)."""
    if value is None:
        raise ArgumentError(f"{name} is missing (None); pass an array")
    if isinstance(value, torch.Tensor):
        value = as_real_tensor(value, name)
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise ShapeError(f"{name} is not a rectangular array ({exc}); pass an array of numbers") from None
    if a.dtype.kind not in "iuf":
        what = {"c": "complex", "b": "boolean", "O": "object", "U": "string", "S": "bytes"}.get(a.dtype.kind, str(a.dtype))
        raise ArgumentError(f"{name} must hold real numbers; got a {what} array (dtype {a.dtype}); "
                            f"pass float values{' (take .real if the imaginary part is 0)' if what == 'complex' else ''}")
    a = a.astype(np.float64, copy=False)
    if ndims is not None and a.ndim not in ndims:
        shapes = " or ".join(f"{k}-d" for k in ndims)
        raise ShapeError(f"{name} must be {shapes}; got shape {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise NonFiniteError(f"{name} contains NaN or infinity; pass finite values")
    return a


def as_real_tensor(value: torch.Tensor, name: str) -> torch.Tensor:
    """Refuse tensors that hold no real data (``meta`` device, complex, boolean)."""
    if value.device.type == "meta":
        raise ArgumentError(f"{name} is on the 'meta' device and holds no data; pass a CPU tensor")
    if value.is_complex():
        raise ArgumentError(f"{name} must hold real numbers; got a complex tensor ({value.dtype}); pass a float tensor")
    if value.dtype == torch.bool:
        raise ArgumentError(f"{name} must hold real numbers; got a boolean tensor; pass a float tensor")
    return value


def check_tokens_layout(t: torch.Tensor, name: str = "tokens") -> None:
    """Refuse tokens that are not in the paper's layout (Eq. 12): x̃ columns ``[0; x]``, ỹ columns ``[y; 0]``.

    ``t`` is ``(B, T, d+1)``; columns ``0, 2, 4, …`` are x̃ (label channel 0), columns
    ``1, 3, …`` are ỹ (input channels 0). The compiled model tells the two kinds apart by
    position only, so a token in the wrong slot would be read silently as something else.
    """
    if t.shape[0] == 0:
        raise ShapeError(f"{name} has batch size 0; pass at least one sequence")
    if t.shape[1] == 0:
        raise ShapeError(f"{name} has no positions (T = 0); pass at least the query x̃")
    xl = t[:, 0::2, 0]
    if xl.numel() and bool((xl != 0).any()):
        b, j = (int(v) for v in torch.nonzero(xl != 0)[0])
        raise ShapeError(
            f"{name} are not in the paper's layout: column {2 * j} (an x̃ column) of batch {b} has a nonzero "
            f"label channel; x̃ columns are [0; x] and ỹ columns [y; 0] — build {name} with "
            f"iclconstruct.tokens.encode(X, y, x_query)")
    yx = t[:, 1::2, 1:]
    if yx.numel() and bool((yx != 0).any()):
        b, j, _ = (int(v) for v in torch.nonzero(yx != 0)[0])
        raise ShapeError(
            f"{name} are not in the paper's layout: column {2 * j + 1} (a ỹ column) of batch {b} has nonzero "
            f"input channels; ỹ columns are [y; 0] — build {name} with iclconstruct.tokens.encode(X, y, x_query)")
