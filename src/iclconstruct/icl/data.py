"""Synthetic in-context linear-regression tasks (Akyürek et al. 2023, §4 "Data"; App. D).

Each task draws ``w ~ N(0, prior_var·I_d)`` and ``n`` inputs ``x_i``, with labels
``y_i = wᵀx_i + ε_i``, ``ε_i ~ N(0, noise_var)``. Besides the training distribution
``x ~ N(0, I_d)`` the sampler offers the shifted test distributions used by the paper's code
and Garg et al. (2022): ``"scaled"`` (x ×2.5), ``"shifted"`` (x + 2.5) and ``"skewed"``
(covariance with eigenvalues 1/i, i = 1..d, along the coordinate axes).

Two samplers share these semantics:

* :func:`sample_tasks` — numpy float64, seeded, for evaluation and comparisons.
* :func:`sample_batch` — torch, drawn directly on the training device in the training dtype
  (no host round trip); coordinates beyond ``d_active`` are zero (the curriculum of Garg et
  al. 2022 on the dimension).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import OutOfRangeError, ShapeError

__all__ = ["Tasks", "sample_tasks", "sample_batch", "X_DISTS"]

X_DISTS = ("normal", "scaled", "shifted", "skewed")


@dataclass(frozen=True)
class Tasks:
    """A batch of regression tasks: ``X (B, n, d)``, ``y (B, n)``, true ``w (B, d)`` (float64)."""

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    noise_var: float = 0.0
    prior_var: float = 1.0
    x_dist: str = "normal"
    seed: int = 0

    @property
    def n_tasks(self) -> int:
        return self.X.shape[0]

    @property
    def n_points(self) -> int:
        return self.X.shape[1]

    @property
    def d(self) -> int:
        return self.X.shape[2]

    def __len__(self) -> int:
        return self.n_tasks

    def prefix(self, k: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X[:, :k], y[:, :k], X[:, k])``: the first ``k`` examples and the next input as query."""
        if not 0 <= k < self.n_points:
            raise OutOfRangeError(f"prefix length k must be in [0, {self.n_points - 1}]; got {k}")
        return self.X[:, :k], self.y[:, :k], self.X[:, k]

    def subset(self, idx) -> "Tasks":
        """Tasks restricted to the index/slice ``idx`` along the task axis."""
        return Tasks(self.X[idx], self.y[idx], self.w[idx], self.noise_var, self.prior_var, self.x_dist, self.seed)


def _check_dist(x_dist: str) -> None:
    if x_dist not in X_DISTS:
        raise OutOfRangeError(f"x_dist must be one of {X_DISTS}; got {x_dist!r}")


def _check_pos_int(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or int(v) != v or v < minimum:
        raise OutOfRangeError(f"{name} must be an integer >= {minimum}; got {v!r}")
    return int(v)


def _transform_x(x, x_dist: str, d: int, xp):
    """Apply the named input distribution to standard-normal draws ``x`` (numpy or torch)."""
    if x_dist == "scaled":
        return 2.5 * x
    if x_dist == "shifted":
        return x + 2.5
    if x_dist == "skewed":
        scale = 1.0 / np.sqrt(np.arange(1, d + 1, dtype=np.float64))
        if xp is torch:
            return x * torch.as_tensor(scale, dtype=x.dtype, device=x.device)
        return x * scale
    return x


def sample_tasks(
    n_tasks: int,
    n_points: int,
    d: int,
    noise_var: float = 0.0,
    prior_var: float = 1.0,
    x_dist: str = "normal",
    seed: int = 0,
) -> Tasks:
    """Draw ``n_tasks`` linear-regression tasks with ``n_points`` examples each (float64, seeded).

    ``w ~ N(0, prior_var·I)``, ``x`` from ``x_dist`` (see module doc), ``y = Xw + N(0, noise_var)``.
    The same ``seed`` always gives the same tasks.
    """
    n_tasks = _check_pos_int(n_tasks, "n_tasks")
    n_points = _check_pos_int(n_points, "n_points")
    d = _check_pos_int(d, "d")
    _check_dist(x_dist)
    if not (np.isfinite(noise_var) and noise_var >= 0):
        raise OutOfRangeError(f"noise_var must be finite and >= 0; got {noise_var}")
    if not (np.isfinite(prior_var) and prior_var > 0):
        raise OutOfRangeError(f"prior_var must be finite and > 0; got {prior_var}")
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_tasks, d)) * np.sqrt(prior_var)
    X = _transform_x(rng.standard_normal((n_tasks, n_points, d)), x_dist, d, np)
    eps = rng.standard_normal((n_tasks, n_points)) * np.sqrt(noise_var)
    y = np.einsum("bnd,bd->bn", X, w) + eps
    return Tasks(X, y, w, float(noise_var), float(prior_var), x_dist, int(seed))


def sample_batch(
    batch_size: int,
    n_points: int,
    d: int,
    *,
    d_active: Optional[int] = None,
    noise_var: float = 0.0,
    prior_var: float = 1.0,
    x_dist: str = "normal",
    generator: Optional[torch.Generator] = None,
    device=None,
    dtype=torch.float32,
    w: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Training batch ``(X (B, n, d), y (B, n))`` in torch; coordinates ``>= d_active`` of x are 0.

    The numbers are drawn by ``generator`` directly on its device (``device`` defaults to the
    generator's, else CPU) in ``dtype``, so no data crosses the host–device boundary. A seeded
    generator gives the same batch on every call; CPU and CUDA generators give different
    streams (reproducibility is per device type).

    ``w`` (shape ``(d,)``) fixes one weight vector for every task instead of drawing
    ``w ~ N(0, prior_var·I)`` per task: the paper's probing control task (§5).
    """
    d_active = d if d_active is None else d_active
    if not 1 <= d_active <= d:
        raise ShapeError(f"d_active must be in [1, d={d}]; got {d_active}")
    _check_dist(x_dist)
    if device is None:
        device = generator.device if generator is not None else "cpu"
    if generator is not None and torch.device(device).type != generator.device.type:
        raise ShapeError(f"generator lives on {generator.device} but device={device!r}; create the generator "
                         "with torch.Generator(device=device)")
    kw = dict(generator=generator, device=device, dtype=dtype)
    if w is None:
        w = torch.randn(batch_size, d, **kw)
        if prior_var != 1.0:
            w = w * float(np.sqrt(prior_var))
    else:
        w = torch.as_tensor(w, device=device, dtype=dtype)
        if w.shape != (d,):
            raise ShapeError(f"a fixed w must have shape (d,) = ({d},); got {tuple(w.shape)}")
        w = w.expand(batch_size, d)
    X = _transform_x(torch.randn(batch_size, n_points, d, **kw), x_dist, d, torch)
    if d_active < d:
        X[..., d_active:] = 0.0
    y = torch.einsum("bnd,bd->bn", X, w)
    if noise_var:
        y = y + torch.randn(batch_size, n_points, **kw) * float(np.sqrt(noise_var))
    return X, y
