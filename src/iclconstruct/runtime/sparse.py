"""Structured-sparse execution of a compiled model (same weights, fewer multiplications).

Compiled weights are almost all zero: a head's query and key use the two position units
(hard attention), its values and outputs copy a few rows, each MLP unit reads one or two
rows (Lemma 4's product units, Lemma 5's bypass) and writes one row plus ``bal``. A
:class:`SparseBlock` computes exactly the Eq. 4 layer of the :class:`~iclconstruct.compiler.model.Block`
it was made from —

    a  = Σ_heads softmax_causal(Q Kᵀ/√d_head) V W_O,   h' = (h + a) + W_out·GeLU(W_in·LN(h + a) + b_in) + b_out

— with queries and keys cut to the columns that are non-zero, the value/output maps and
both MLP matrices stored as CSR tensors, and MLP units that are all zero (padding) dropped.
Only the order in which non-zero terms are summed differs from the dense layer (round-off).
:func:`to_dense` gives back the dense block, entry for entry. A block is made from a dense
block (``SparseBlock(block, config)``, what ``model.to_sparse()`` does) or, without any dense
matrix, from sparse entries (:meth:`SparseBlock.from_parts`, what ``compile(..., sparse=True)``
does); both give the same buffers. Paper block (Eq. 4) only.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArgumentError
from .activations import activation

__all__ = ["SparseBlock", "sparse_model", "dense_model", "density"]



def _csr(W: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return W.to_sparse_csr()


def _csr_of(rows, cols, vals, shape, dtype) -> torch.Tensor:
    """A CSR tensor from entries, as ``dense.to_sparse_csr()`` stores it: sorted, no exact zeros."""
    o = np.lexsort((cols, rows))
    rows, cols = np.asarray(rows, np.int64)[o], np.asarray(cols, np.int64)[o]
    v = torch.as_tensor(np.asarray(vals, np.float64)[o]).to(dtype)
    keep = (v != 0).numpy()
    rows, cols, v = rows[keep], cols[keep], v[torch.as_tensor(keep)]
    crow = np.zeros(shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=crow[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(torch.as_tensor(crow), torch.as_tensor(cols), v, size=shape)


def _spmm(Wt: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x @ W`` for a CSR ``Wt = Wᵀ`` ``(n, D)`` and dense ``x`` ``(..., D)``."""
    if x.shape[-1] == 0 or Wt._nnz() == 0:
        return x.new_zeros(*x.shape[:-1], Wt.shape[0])
    flat = x.reshape(-1, x.shape[-1])
    out = torch.sparse.mm(Wt, flat.t().contiguous()).t()
    return out.reshape(*x.shape[:-1], Wt.shape[0])


def density(model) -> float:
    """Fraction of non-zero weights in the model's blocks."""
    nz = tot = 0
    for b in model.blocks:
        for p in b.parameters():
            nz += int((p != 0).sum())
            tot += p.numel()
    return nz / max(tot, 1)


class SparseBlock(nn.Module):
    """The Eq. 4 layer of a dense ``Block`` on sparse weights (same call signature)."""

    def __init__(self, blk, config):
        super().__init__()
        self.config = config
        self._dense_cls = type(blk)
        A, M = blk.attn, blk.mlp
        H, D, E = A.W_Q.shape
        self.shape = (H, D, E, M.W_in.shape[1])
        self.d_head = A.d_head
        self.ln_eps = blk.ln_eps
        self.head_labels = list(A.head_labels)
        self.unit_labels = list(M.unit_labels)
        with torch.no_grad():
            qk = [torch.nonzero((A.W_Q[h] != 0).any(0) | (A.W_K[h] != 0).any(0)).flatten() for h in range(H)]
            kq = max([len(c) for c in qk] + [1])
            Wq = A.W_Q.new_zeros(H, D, kq)
            Wk = A.W_K.new_zeros(H, D, kq)
            for h, c in enumerate(qk):
                Wq[h, :, : len(c)] = A.W_Q[h][:, c]
                Wk[h, :, : len(c)] = A.W_K[h][:, c]
            vo = [torch.nonzero((A.W_V[h] != 0).any(0) | (A.W_O[h] != 0).any(1)).flatten() for h in range(H)]
            V = torch.cat([A.W_V[h][:, c] for h, c in enumerate(vo)], dim=1)  # (D, ΣE_h)
            O = torch.cat([A.W_O[h][c, :] for h, c in enumerate(vo)], dim=0)  # (ΣE_h, D)
            units = torch.nonzero((M.W_in != 0).any(0) | (M.b_in != 0) | (M.W_out != 0).any(1)).flatten()
        self._install(Wq, Wk, _csr(V.t().contiguous()), _csr(O.t().contiguous()),
                      _csr(M.W_in[:, units].t().contiguous()), _csr(M.W_out[units, :].t().contiguous()),
                      M.b_in[units].clone(), M.b_out.clone(), qk, vo, units)
        # signed zeros (the balancing writes −0.0) so that to_dense() is bit for bit
        self.neg_zero = {f"{part}.{name}": torch.nonzero(torch.signbit(t) & (t == 0))
                         for part, mod in (("attn", A), ("mlp", M)) for name, t in mod.named_parameters()}

    def _install(self, Wq, Wk, Vt, Ot, Wint, Woutt, b_in, b_out, qk, vo, units) -> None:
        self.register_buffer("Wq", Wq)
        self.register_buffer("Wk", Wk)
        self.register_buffer("Vt", Vt)
        self.register_buffer("Ot", Ot)
        self.register_buffer("Wint", Wint)
        self.register_buffer("Woutt", Woutt)
        self.register_buffer("b_in", b_in)
        self.register_buffer("b_out", b_out)
        self.qk_cols: List[torch.Tensor] = qk
        self.vo_cols: List[torch.Tensor] = vo
        self.units = units
        self.head_slices = []
        i = 0
        for c in vo:
            self.head_slices.append((i, i + len(c)))
            i += len(c)

    def __deepcopy__(self, memo):
        """``copy.deepcopy`` (torch cannot deep-copy CSR tensors): every other attribute is deep-copied
        as usual, the CSR buffers are rebuilt from clones of their index and value arrays."""
        csr = {k: v for k, v in self._buffers.items() if v is not None and v.layout == torch.sparse_csr}
        held = dict(self._buffers)
        self._buffers.update({k: None for k in csr})
        try:
            new = self.__class__.__new__(self.__class__)
            memo[id(self)] = new
            for k, v in self.__dict__.items():
                new.__dict__[k] = copy.deepcopy(v, memo)
        finally:
            self._buffers.update(held)
        for k, v in csr.items():
            new._buffers[k] = torch.sparse_csr_tensor(v.crow_indices().clone(), v.col_indices().clone(),
                                                      v.values().clone(), v.shape)
        return new

    @classmethod
    def from_parts(cls, config, heads, mlp, dense_cls) -> "SparseBlock":
        """The block of one layer built sparse from the start (:mod:`iclconstruct.compiler.sparse_build`).

        ``heads``: per head its ``(D, 2)`` query and key maps and the entries of its value map
        (transposed) and output map (:class:`~iclconstruct.compiler.sparse_heads.SparseHead`);
        ``mlp``: :class:`~iclconstruct.compiler.sparse_mlp.SparseMLPParts`. The buffers equal those
        of ``SparseBlock(dense block)``; exact zeros are not stored, so ``to_dense()`` has ``+0.0``
        where the dense build has ``−0.0``. Unit labels stay lazy.
        """
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.config = config
        self._dense_cls = dense_cls  # what to_dense() makes (compiler.model.Block)
        H, D, E, m = config.n_heads, config.d_model, config.d_head, config.d_mlp
        dt = config.dtype
        self.shape = (H, D, E, m)
        self.d_head = E
        self.ln_eps = config.ln_eps
        self.head_labels = [hd.label for hd in heads]
        self.unit_labels = mlp.labels
        qk = [np.flatnonzero((hd.W_Q != 0).any(0) | (hd.W_K != 0).any(0)) for hd in heads] + [np.zeros(0, np.int64)] * (H - len(heads))
        kq = max([len(c) for c in qk] + [1])
        Wq, Wk = torch.zeros(H, D, kq, dtype=dt), torch.zeros(H, D, kq, dtype=dt)
        for h, hd in enumerate(heads):
            Wq[h, :, : len(qk[h])] = torch.as_tensor(hd.W_Q[:, qk[h]])
            Wk[h, :, : len(qk[h])] = torch.as_tensor(hd.W_K[:, qk[h]])
        vo, vr, vc, vv, orow, oc, ov = [], [], [], [], [], [], []
        off = 0
        for hd in heads:
            cols = np.unique(np.concatenate([hd.V.r, hd.O.r]))
            vo.append(cols)
            vr.append(off + np.searchsorted(cols, hd.V.r)), vc.append(hd.V.c), vv.append(hd.V.v)
            orow.append(hd.O.c), oc.append(off + np.searchsorted(cols, hd.O.r)), ov.append(hd.O.v)
            off += len(cols)
        vo += [np.zeros(0, np.int64)] * (H - len(heads))
        cat = lambda xs, dtp: np.concatenate(xs).astype(dtp) if xs else np.zeros(0, dtp)
        n_units = len(mlp.units)
        self._install(Wq, Wk, _csr_of(cat(vr, np.int64), cat(vc, np.int64), cat(vv, np.float64), (off, D), dt),
                      _csr_of(cat(orow, np.int64), cat(oc, np.int64), cat(ov, np.float64), (D, off), dt),
                      _csr_of(mlp.w_in.r, mlp.w_in.c, mlp.w_in.v, (n_units, D), dt),
                      _csr_of(mlp.w_out.r, mlp.w_out.c, mlp.w_out.v, (D, n_units), dt),
                      torch.as_tensor(mlp.b_in).to(dt), torch.as_tensor(mlp.b_out).to(dt),
                      [torch.as_tensor(c, dtype=torch.int64) for c in qk],
                      [torch.as_tensor(c, dtype=torch.int64) for c in vo], torch.as_tensor(mlp.units, dtype=torch.int64))
        pads = [(h, i) for h, cols in enumerate(vo[: len(heads)]) for i in sorted(set(range(E)) - set(cols.tolist()))]
        self.neg_zero = {}
        if pads and mlp.bal is not None:
            self.neg_zero["attn.W_O"] = torch.tensor([(h, i, mlp.bal) for h, i in pads], dtype=torch.int64)
        out_neg = list(map(tuple, mlp.out_neg.tolist())) + [(k, mlp.bal) for k in range(mlp.m, m)]
        if out_neg:
            self.neg_zero["mlp.W_out"] = torch.tensor(out_neg, dtype=torch.int64)
        if len(mlp.b_in_neg):
            self.neg_zero["mlp.b_in"] = torch.as_tensor(mlp.b_in_neg, dtype=torch.int64)[:, None]
        self.neg_fill = (torch.as_tensor(mlp.neg_fill, dtype=torch.int64), torch.as_tensor(mlp.one_pos, dtype=torch.int64),
                         torch.as_tensor(mlp.one_neg, dtype=torch.int64), mlp.one)
        return self

    def forward(self, h: torch.Tensor, hook, l: int, kv: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.mlp_sublayer(self.attn_sublayer(h, hook, l, kv=kv, mask=mask), hook, l)

    def attn_sublayer(self, h: torch.Tensor, hook, l: int, kv: Optional[torch.Tensor] = None,
                      mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``h + a`` (Eq. 4, first half), queries/keys on their non-zero columns, CSR values/outputs."""
        h = hook.block(l, "hook_resid_pre", h)
        kv = h if kv is None else kv
        q = torch.einsum("btd,hde->bthe", h, self.Wq)
        k = torch.einsum("btd,hde->bthe", kv, self.Wk)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(self.d_head)
        if mask is None:
            T = h.shape[1]
            mask = torch.ones(T, T, dtype=torch.bool, device=h.device).triu(1)
        pattern = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        v = _spmm(self.Vt, kv)  # (B, Tk, ΣE_h)
        z = torch.cat([pattern[:, i] @ v[..., a:b] for i, (a, b) in enumerate(self.head_slices)], dim=-1)
        a = hook.block(l, "hook_attn_out", _spmm(self.Ot, z))
        return hook.block(l, "hook_resid_mid", h + a)

    def mlp_sublayer(self, mid: torch.Tensor, hook, l: int) -> torch.Tensor:
        """``mid + MLP(LayerNorm(mid))`` (Eq. 4, second half) on CSR weights."""
        x = F.layer_norm(mid, (mid.shape[-1],), eps=self.ln_eps)
        post = activation(self.config.act_fn)(_spmm(self.Wint, x) + self.b_in)
        m = hook.block(l, "hook_mlp_out", _spmm(self.Woutt, post) + self.b_out)
        return hook.block(l, "hook_resid_post", mid + m)

    def to_dense(self):
        """The dense :class:`~iclconstruct.compiler.model.Block` with the same entries."""
        blk = self._dense_cls(self.config).to(self.b_out.device)
        with torch.no_grad():
            V = self.Vt.to_dense().t()
            O = self.Ot.to_dense().t()
            for h, c in enumerate(self.qk_cols):
                blk.attn.W_Q[h][:, c] = self.Wq[h, :, : len(c)]
                blk.attn.W_K[h][:, c] = self.Wk[h, :, : len(c)]
            for h, ((a, b), c) in enumerate(zip(self.head_slices, self.vo_cols)):
                blk.attn.W_V[h][:, c] = V[:, a:b]
                blk.attn.W_O[h][c, :] = O[a:b, :]
            blk.mlp.W_in[:, self.units] = self.Wint.to_dense().t()
            blk.mlp.W_out[self.units, :] = self.Woutt.to_dense().t()
            blk.mlp.b_in[self.units] = self.b_in
            blk.mlp.b_out.copy_(self.b_out)
            params = dict(blk.named_parameters())
            fill = getattr(self, "neg_fill", None)
            if fill is not None and len(fill[0]):  # built sparse: whole W_in columns of −0.0 (negated rows)
                cols, one_pos, one_neg, one = fill
                W = blk.mlp.W_in
                sub = W[:, cols]
                W[:, cols] = torch.where(sub == 0, torch.full_like(sub, -0.0), sub)
                W[one, one_pos] = torch.where(W[one, one_pos] == 0, torch.zeros_like(W[one, one_pos]), W[one, one_pos])
            if fill is not None and len(fill[2]):
                cols, one = fill[2], fill[3]
                W = blk.mlp.W_in
                W[one, cols] = torch.where(W[one, cols] == 0, torch.full_like(W[one, cols], -0.0), W[one, cols])
            for name, idx in self.neg_zero.items():
                if len(idx):
                    params[name][tuple(idx.t())] = -0.0
        blk.attn.head_labels = list(self.head_labels)
        blk.mlp.unit_labels = list(self.unit_labels)
        return blk


def _with_blocks(model, blocks):
    out = copy.copy(model)
    out._modules = dict(model._modules)
    out.blocks = nn.ModuleList(blocks)
    out.__dict__.pop("_cell_plans", None)
    return out


def sparse_model(model):
    """A copy of ``model`` whose blocks are :class:`SparseBlock` (the dense one is untouched).

    Paper block only: :class:`SparseBlock` has no LayerNorm in front of attention and no attention
    biases, so a ``block='pre_ln'`` model raises :class:`~iclconstruct.errors.ArgumentError`.
    """
    if model.cfg.block != "paper":
        raise ArgumentError(f"to_sparse(): sparse blocks run the paper block (Eq. 4) only; this model has "
                            f"block={model.cfg.block!r} (compile with block='paper' to run sparse)")
    return _with_blocks(model, [b if isinstance(b, SparseBlock) else SparseBlock(b, model.cfg) for b in model.blocks])


def dense_model(model):
    """A copy of ``model`` with dense blocks (for export, hooks on every activation, inspection)."""
    return _with_blocks(model, [b.to_dense() if isinstance(b, SparseBlock) else b for b in model.blocks])
