"""Run a compiled model on the cells of a :class:`~iclconstruct.runtime.plan.CellPlan` only.

Layer by layer, in the order the full pass runs them, the columns the plan lists are fed
through the model's own :class:`~iclconstruct.compiler.model.Block` (the same weights and
the same sublayer code as the full pass, Eq. 4); their attention reads keys and values
of just the columns its heads attend to (the key/value cache), taken from those columns'
current states. Columns a layer skips keep their state: by the plan's two rules their
needed values are exactly what the full pass would hold there.

Hard attention and the averaging reads put a weight of at most ``e^{−A}`` (``A`` =
``Constants.attn_hardness``) on the columns left out of a head's key set, so dropping them
changes a head's output by that relative amount (``≈ 2e−22`` at the default ``A = 50``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..lang.ops import Mov, Read, Sum
from .checks import RangeMonitor
from .plan import CellPlan, read_sources

__all__ = ["run_cells", "head_reads"]

#: the head of a ``sum``: the mean over the ỹ columns (the compiler's ``Read('mean', 2)``)
SUM_READ = Read("mean", 2)


def head_reads(model, bi: int):
    """The distinct remote reads of block ``bi``'s attention (offset-0 copies are the self head)."""
    reads = []
    for op in model.plans[bi].attn_ops:
        if isinstance(op, Mov) and not (op.read.kind == "offset" and op.read.k == 0) and op.read not in reads:
            reads.append(op.read)
    if any(isinstance(op, Sum) for op in model.plans[bi].mlp_ops) and SUM_READ not in reads:
        reads.append(SUM_READ)  # a sum's averaging read over the ỹ columns
    return reads


def _keys(model, bi: int, cols: np.ndarray, T: int, cache: Dict) -> np.ndarray:
    """Sorted columns the heads of block ``bi`` read from queries ``cols`` (the queries included)."""
    ks = [cols]
    for rd in head_reads(model, bi):
        key = (rd, T)
        if key not in cache:
            cache[key] = read_sources(rd, T)
        idx, member = cache[key]
        if idx is not None:
            ks.append(idx[cols])
        else:
            tmax = int(cols.max())
            has = np.cumsum(member) > 0
            j = np.arange(tmax + 1)
            ks.append(j[member[: tmax + 1]] if has[cols].all() else j)
    return np.unique(np.concatenate(ks))


def run_cells(model, h: torch.Tensor, plan: CellPlan, *, check: bool = True,
              monitor: Optional[RangeMonitor] = None) -> torch.Tensor:
    """Advance the embedded residual stream ``h`` ``(B, T, D)`` through ``plan``; returns it.

    Only the planned cells are computed; other entries keep stale values that nothing
    downstream of the readout reads.
    """
    T = h.shape[1]
    dev = h.device
    hook = model._null_hooks
    mon = monitor if monitor is not None else (RangeMonitor(model) if check else None)
    src_cache: Dict = {}
    h = h.clone()
    for l, (bi, cols) in enumerate(zip(plan.layers, plan.columns)):
        if len(cols) == 0:
            continue
        keys = _keys(model, bi, cols, T, src_cache)
        q_idx = torch.as_tensor(cols, device=dev)
        k_idx = torch.as_tensor(keys, device=dev)
        mask = torch.as_tensor(keys[None, :] > cols[:, None], device=dev)
        hq = h.index_select(1, q_idx)
        kv = h.index_select(1, k_idx)
        blk = model.blocks[bi]
        out = mon.layer(blk, hq, l, bi, hook, kv=kv, mask=mask) if mon is not None else blk(hq, hook, l, kv=kv, mask=mask)
        h.index_copy_(1, q_idx, out)
    if mon is not None and monitor is None:
        mon.verify()
    return h
