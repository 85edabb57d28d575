"""Range checks batched on the model's device: one host synchronisation per forward pass.

The compiled model checks every divisor (Lemma 8 needs ``|c| ≥ div_min``) and every
written slot (the constants give their stated error only inside the declared bounds)
with the same functions as the interpreter (:mod:`iclconstruct.lang.checks`). Reading a
maximum back to the host after every slot of every layer stalls an accelerator; here each
layer's maxima stay on the device as one small tensor, and :meth:`RangeMonitor.verify`
copies them all at once and raises the first violation in execution order, with the
message the per-slot checks give.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from ..lang.checks import BOUND_SLACK, check_divisor, check_written

__all__ = ["RangeMonitor"]


def _absmax(v: torch.Tensor) -> torch.Tensor:
    """``max |v|`` over all but the last axis, per last-axis entry; non-finite entries give ``inf``."""
    a = torch.where(torch.isfinite(v), v.abs(), torch.full_like(v, float("inf")))
    return a.reshape(-1, a.shape[-1]).amax(0) if a.numel() else torch.zeros(a.shape[-1], dtype=a.dtype, device=a.device)


class RangeMonitor:
    """Collects divisor minima and written-slot maxima per layer; :meth:`verify` checks them."""

    def __init__(self, model):
        self.model = model
        self.pending: List[Tuple[str, int, int, torch.Tensor]] = []  # (kind, layer, block, values)
        self._rows: Dict[int, Tuple[torch.Tensor, torch.Tensor, list]] = {}

    def _written(self, bi: int, device) -> Tuple[torch.Tensor, torch.Tensor, list]:
        key = bi
        if key not in self._rows:
            lay = self.model.layout
            rows, seg, ops = [], [], []
            for i, op in enumerate(self.model.plans[bi].ops):
                s = lay[op.writes()]
                rows += list(s.rows)
                seg += [i] * s.size
                ops.append(op)
            self._rows[key] = (torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(seg, dtype=torch.long), ops)
        r, s, ops = self._rows[key]
        return r.to(device), s.to(device), ops

    def before(self, h: torch.Tensor, l: int, bi: int) -> None:
        plan = self.model.plans[bi]
        if plan.divisor is not None and h.numel():
            c = self.model.layout.view(h, plan.divisor)[..., 0].abs()
            self.pending.append(("div", l, bi, c.amin().reshape(1)))

    def after(self, h: torch.Tensor, l: int, bi: int) -> None:
        rows, seg, ops = self._written(bi, h.device)
        if not ops or h.shape[-2] == 0:
            return
        per_row = _absmax(h[..., rows])
        per_op = torch.zeros(len(ops), dtype=per_row.dtype, device=per_row.device)
        per_op = per_op.scatter_reduce(0, seg, per_row, reduce="amax", include_self=True)
        self.pending.append(("written", l, bi, per_op))

    def verify(self) -> None:
        """Copy every collected value to the host at once and raise the first violation."""
        if not self.pending:
            return
        flat = torch.cat([v for *_, v in self.pending]).detach().to("cpu").tolist()
        m = self.model
        slack = BOUND_SLACK if m.dtype == torch.float64 else 1e-3  # the dtype's own error
        i = 0
        pending, self.pending = self.pending, []
        for kind, l, bi, v in pending:
            vals = flat[i : i + v.numel()]
            i += v.numel()
            plan = m.plans[bi]
            if kind == "div":
                check_divisor(f"layer {l}", "div", plan.divisor, vals[0], m.constants.div_min)
            else:
                for op, a in zip(plan.ops, vals):
                    check_written(f"layer {l}", op.describe(), m.layout[op.writes()], a, slack)
