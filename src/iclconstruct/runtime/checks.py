"""Range checks batched on the model's device: one host synchronisation per forward pass.

The compiled model refuses values outside the range its constants were designed for, with
the interpreter's checks (:mod:`iclconstruct.lang.checks`) and the LayerNorm-scale check
(:func:`iclconstruct.compiler.admissible.check_layernorm_scale`, Lemmas 6 and 8): every
divisor before its div layer, the slots the attention wrote after the attention sublayer
(minus rows the MLP then rewrites), the column norm entering the MLP, the slots the MLP
wrote after it. Reading each maximum back to the host as it is made stalls an accelerator
once per slot per layer; here each check leaves a small tensor on the device, and
:meth:`RangeMonitor.verify` copies them all at once and raises the first violation in
execution order, with the message the immediate check gives.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from ..compiler.admissible import check_layernorm_scale, slack_for
from ..errors import OutOfRangeError
from ..lang.checks import bound_advice, check_divisor, check_written

__all__ = ["RangeMonitor", "divisor_tolerance"]


def divisor_tolerance(model, plan) -> float:
    """How far below its declared minimum (``Div.min_abs``) the model's divisor may fall: the stated
    accuracy relative to the divisor slot's bound, as for every written slot (``check_written``)."""
    slack = slack_for(model.dtype)
    return slack * (model.layout[plan.divisor].bound + 1.0)


def _absmax_per_row(v: torch.Tensor) -> torch.Tensor:
    """``max |v|`` over all axes but the last; non-finite entries count as ``inf``."""
    if v.numel() == 0:
        return torch.zeros(v.shape[-1], dtype=v.dtype, device=v.device)
    m = v.reshape(-1, v.shape[-1]).abs().amax(0)  # amax propagates NaN, |±inf| = inf
    return torch.nan_to_num(m, nan=float("inf"), posinf=float("inf"))


class RangeMonitor:
    """Runs blocks sublayer by sublayer, collecting every check on the device; :meth:`verify` raises."""

    def __init__(self, model):
        self.model = model
        self.pending: List[Tuple] = []  # (kind, layer, block, payload tensor, extra)
        self._rows: Dict[Tuple[int, str], Tuple] = {}
        self._skip: Optional[torch.Tensor] = None  # anchor and pair rows (left out of the column norm)

    def _written(self, bi: int, part: str, device):
        key = (bi, part)
        if key not in self._rows:
            lay, plan = self.model.layout, self.model.plans[bi]
            D = self.model.d_model
            mlp_rows = lay.mask([op.writes() for op in plan.mlp_ops], width=D)
            rows, seg, ops = [], [], []
            for op in (plan.attn_ops if part == "attn" else plan.mlp_ops):
                keep = lay.mask([op.writes()], width=D)
                if part == "attn":  # rows the MLP rewrites (a dead slot's rows reused) are the MLP's
                    keep &= ~mlp_rows
                r = [int(i) for i in keep.nonzero()[0]]
                if r:
                    seg += [len(ops)] * len(r)
                    rows += r
                    ops.append(op)
            self._rows[key] = (torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(seg, dtype=torch.long), ops)
        r, s, ops = self._rows[key]
        return r.to(device), s.to(device), ops

    def _check_written(self, h: torch.Tensor, l: int, bi: int, part: str) -> None:
        rows, seg, ops = self._written(bi, part, h.device)
        if not ops or h.shape[-2] == 0:
            return
        per_row = _absmax_per_row(h[..., rows])
        per_op = torch.zeros(len(ops), dtype=per_row.dtype, device=per_row.device)
        per_op = per_op.scatter_reduce(0, seg, per_row, reduce="amax", include_self=True)
        self.pending.append(("written", l, bi, per_op, ops))

    def _check_layernorm(self, h: torch.Tensor, l: int, bi: int) -> None:
        """The quantity :func:`check_layernorm_scale` bounds, its worst column kept on the device."""
        m, plan = self.model, self.model.plans[bi]
        lay, c = m.layout, m.constants
        if h.numel() == 0:
            return
        hd = h.double()
        sq = hd * hd
        if self._skip is None or self._skip.device != h.device:  # the same rows in every layer
            self._skip = torch.as_tensor(lay.rows("anchor") + lay.rows("pair"), dtype=torch.long, device=h.device)
        norm_sq = sq.sum(-1) - sq.index_select(-1, self._skip).sum(-1)
        if plan.divisor is None:
            rel = norm_sq / (4.0 * c.ln_anchor ** 2)
        else:  # M·|c| from the pair rows, written from c as this layer's attention read it: the divisor's
            # own rows may already hold a new slot's value (a mov of this layer reusing them)
            rel = norm_sq / (4.0 * lay.view(h, "pair")[..., 0].double().abs() ** 2)
        flat = rel.reshape(-1)
        i = torch.argmax(flat)
        self.pending.append(("layernorm", l, bi, torch.stack([flat[i], i.double()]), (sq.reshape(-1, sq.shape[-1])[i],
                                                                                       tuple(rel.shape))))

    def layer(self, blk, h: torch.Tensor, l: int, bi: int, hook, kv=None, mask=None) -> torch.Tensor:
        """Run block ``blk`` as layer ``l`` on ``h`` with every check recorded."""
        plan = self.model.plans[bi]
        if plan.divisor is not None and h.numel():
            c = self.model.layout.view(h, plan.divisor)[..., 0].abs()
            self.pending.append(("div", l, bi, c.amin().reshape(1), None))
        mid = blk.attn_sublayer(h, hook, l, kv=kv, mask=mask)
        self._check_written(mid, l, bi, "attn")
        if plan.mlp_ops:
            self._check_layernorm(mid, l, bi)
        out = blk.mlp_sublayer(mid, hook, l)
        self._check_written(out, l, bi, "mlp")
        return out

    def verify(self) -> None:
        """Copy every collected value to the host at once and raise the first violation."""
        if not self.pending:
            return
        flat = torch.cat([p[3].to(torch.float64) for p in self.pending]).detach().to("cpu").tolist()
        m = self.model
        slack = slack_for(m.dtype)
        pending, self.pending = self.pending, []
        i = 0
        for kind, l, bi, v, extra in pending:
            vals = flat[i : i + v.numel()]
            i += v.numel()
            plan = m.plans[bi]
            if kind == "div":
                check_divisor(f"layer {l}", "div", plan.divisor, vals[0], m.constants.div_min, plan.divisor_min,
                              divisor_tolerance(m, plan), advice=bound_advice(m.program, plan.divisor))
            elif kind == "written":
                for op, a in zip(extra, vals):
                    check_written(f"layer {l}", op.describe(), m.layout[op.writes()], a, slack,
                                  advice=bound_advice(m.program, op.writes()))
            elif vals[0] > slack or vals[0] != vals[0]:
                self._raise_layernorm(l, plan, int(vals[1]), extra)

    def _raise_layernorm(self, l: int, plan, index: int, extra) -> None:
        """Re-run the immediate check on the worst column alone, for its message."""
        col_sq, shape = extra
        b, t = divmod(index, shape[-1])
        h = torch.zeros(b + 1, t + 1, col_sq.shape[-1], dtype=torch.float64)
        h[b, t] = col_sq.detach().to("cpu").sqrt()
        m = self.model
        check_layernorm_scale(h, m.layout, m.constants, m.dtype, l, plan.divisor, m.program)
        raise OutOfRangeError(f"layer {l}: LayerNorm's scale error exceeds the model's stated accuracy; "
                              f"keep the values in the column smaller")  # pragma: no cover
