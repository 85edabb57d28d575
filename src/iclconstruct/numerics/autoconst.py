"""Approximation constants chosen for the program: the LayerNorm anchor that minimises the certificate.

The anchor ``K`` of the LayerNorm bypass (Lemma 6) and the division pair's ``M`` (Lemma 8) trade
two errors against each other: the column's computed mean ``μ̂`` errs by ``≈ u·K`` (an absolute
offset on every read) while LayerNorm's shared scale errs by ``‖h‖²/(4K²)`` (relative). Which
``K`` is best depends on how large the program's values are — the ridge circuit's ``u uᵀ`` wants a
large ``K``, SGD a small one — so no global value fits every program. :func:`choose_constants`
evaluates the end-to-end certificate (:mod:`iclconstruct.numerics.certificate`) of the program's
compiled structure for each ``K = M`` on a grid around the dtype's default and keeps the smallest
bound. The structure (layers, heads, units, operand scales) does not depend on ``K`` or ``M``, so
no weight is built for the search.

Only candidates that cannot add a run-time refusal are tried: ``K`` at least the default, or
large enough that the LayerNorm scale check (``check_layernorm_scale``) cannot fire on any column
the declared bounds allow. Measured (``bench/auto_constants.py``, docs/certificate.md): in float64
the choice is at least as accurate on Gaussian tasks as the fixed ``1e8`` on every circuit of that bench
(ridge ``d = 4, λ = 1``: 3.8e-9 at the chosen 1e7 against 6e-8; SGD ``d = 4``: 1.3e-9 against 6.8e-9),
but a bound is a worst case: at ``d = 16`` a 10% smaller certificate moves ``batch_gd`` and
``preconditioned_gd`` to ``3e8``, which measures 1.3–2.6× worse there (at the 1e-9 level). In float32
the certificate is too loose (often infinite at one example) to rank the anchors, so float32 keeps
its measured defaults (:meth:`Constants.float32`) unless ``constants='auto'`` is passed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import List, Tuple

import torch

from ..errors import ICLConstructError
from .constants import Constants

__all__ = ["choose_constants", "ModelStructure", "ANCHOR_FACTORS"]

#: the grid of ``K = M`` tried, as multiples of the dtype's default anchor
ANCHOR_FACTORS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass
class ModelStructure:
    """What the certificate reads of a compiled model, without its weights."""

    program: object
    layout: object
    constants: Constants
    dtype: torch.dtype
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    max_len: int
    plans: list
    _segments: list
    operand_scales: dict


def _column_norm_sq(structure: ModelStructure) -> float:
    """An upper bound on ``‖h‖²`` over the rows the LayerNorm scale check counts, for any admissible column:
    every slot at its run-time cap (slots sharing rows counted once each — an overestimate) plus the
    ``bal`` row (minus the column's sum) and the system rows."""
    from ..compiler.admissible import slack_for

    slack = slack_for(structure.dtype)
    slots = [s for s in structure.layout.slots() if s.name not in ("anchor", "pair", "bal", "one", "pos", "is_y")]
    if any(not math.isfinite(s.bound) for s in slots):
        return math.inf
    caps = [(s.size, s.bound * (1 + slack) + slack) for s in slots]
    S = sum(n * c for n, c in caps) + 3.0  # + the system rows one, pos, is_y (each at most 1)
    return sum(n * c * c for n, c in caps) + S * S + 3.0


def choose_constants(structure: ModelStructure, *, n_examples: int = 1,
                     factors: Tuple[float, ...] = ANCHOR_FACTORS) -> Tuple[Constants, List[dict]]:
    """The constants whose certificate at ``n_examples`` examples is smallest, and the table of candidates.

    ``structure.constants`` is the starting point (the dtype's defaults); ``ln_anchor`` and ``div_scale``
    move together over ``factors`` of it. Each row of the table: ``{"ln_anchor", "div_scale",
    "certificate", "admissible"}``. The default stays unless a candidate's bound is at least 5% smaller;
    if no candidate has a finite bound, the default stays.
    """
    from ..compiler.admissible import check_constants, slack_for
    from .certificate import certify

    base = structure.constants
    slack = slack_for(structure.dtype)
    q_max = _column_norm_sq(structure)
    c_min = min([max(base.div_min, p.divisor_min) for p in structure.plans if p.divisor is not None] or [math.inf])
    rows: List[dict] = []
    best, best_cert, base_cert = base, math.inf, math.inf
    for f in factors:
        K, M = base.ln_anchor * f, base.div_scale * f
        cand = replace(base, ln_anchor=K, div_scale=M)
        # no new refusals: at least the default, or the LayerNorm scale check cannot fire on any column
        safe = f >= 1.0 or (q_max / (4 * K * K) <= slack and (c_min == math.inf or q_max / (4 * (M * c_min) ** 2) <= slack))
        try:
            check_constants(cand, structure.layout, structure.dtype, structure.d_model)
        except ICLConstructError:
            safe = False
        cert = math.inf
        if safe:
            structure.constants = cand
            try:
                cert = certify(structure, n_examples).max_abs_error
            finally:
                structure.constants = base
        rows.append({"ln_anchor": K, "div_scale": M, "certificate": cert, "admissible": safe})
        if f == 1.0:
            base_cert = cert
        if cert < best_cert:
            best, best_cert = cand, cert
    if not math.isfinite(best_cert) or not best_cert < 0.95 * base_cert:
        best = base
    return best, rows
