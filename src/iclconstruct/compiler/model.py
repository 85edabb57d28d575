"""The compiled model: a stack of the paper's Eq. 4 layers, nothing else.

Each layer is::

    a   = Σ_heads softmax_causal(Q Kᵀ / √d_head) V W_O            (multi-head attention)
    h'  = (h + a) + W_out·GeLU(W_in·LayerNorm(h + a) + b_in) + b_out

LayerNorm is over the full hidden vector, without affine parameters; GeLU is the exact
(erf) GeLU (or GPT-2's tanh GeLU, ``act_fn="gelu_new"``); attention is standard causal
softmax attention. A weight-tied loop body is one set of layers run several times, so
parameters do not grow with the context.

The GPT-2-style block (``block="pre_ln"``, as GPT-2 and TransformerLens'
``normalization_type="LN"``) puts a LayerNorm in front of attention too and gives the
attention biases ``b_Q, b_K, b_O`` (zero-sum weights plus a bias undo that LayerNorm,
Lemma 6, :func:`~iclconstruct.compiler.layernorm.fold_layernorm`)::

    h'  = h + Attn(LayerNorm(h));   h'' = h' + MLP(LayerNorm(h'))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from einops import einsum
from torch import nn

from ..circuit_file import save
from ..numerics.constants import Constants
from ..lang.checks import check_guards, check_inputs
from ..errors import ContextTooLongError, NonFiniteError, ShapeError
from .hooks import ActivationCache, HookManager
from ..runtime.activations import activation, gelu_new  # noqa: F401  (gelu_new: imported from here by users)
from ..runtime.checks import RangeMonitor
from ..lang.interpreter import readout
from ..lang.layout import Layout
from .attention import HeadWeights
from .mlp import MLPWeights
from ..lang.ops import Mul
from ..lang.program import Program
from .config import ConstructedTransformerConfig
from .schedule import LayerPlan, Schedule, SegmentPlan
from ..tokens import encode
from ..errors import ArgumentError
from ..lang.validate import as_real_array, as_real_tensor, check_tokens_layout

__all__ = ["ConstructedTransformer", "ConstructedTransformerConfig", "LayerWeights", "Block"]


@dataclass
class LayerWeights:
    heads: List[HeadWeights]
    mlp: MLPWeights


#: the attention sublayer caches its query/key/value maps side by side (one matrix product per
#: layer instead of three) while that copy takes at most this many bytes
FUSED_QKV_MAX_BYTES = 64 * 2**20


class Attention(nn.Module):
    """Causal multi-head softmax attention, weights as ``W_Q[n_heads, d_model, d_head]`` (TransformerLens)."""

    def __init__(self, cfg: ConstructedTransformerConfig):
        super().__init__()
        z = lambda *s: nn.Parameter(torch.zeros(*s, dtype=cfg.dtype), requires_grad=False)
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q, self.W_K, self.W_V, self.W_O = z(h, d, e), z(h, d, e), z(h, d, e), z(h, e, d)
        self.bias = cfg.block == "pre_ln"
        if self.bias:  # GPT-2-style block: b_Q, b_K [n_heads, d_head], b_O [d_model] (b_V is folded into b_O)
            self.b_Q, self.b_K, self.b_O = z(h, e), z(h, e), z(d)
        self.d_head = e
        self.head_labels: List[str] = []

    def _flat(self) -> Optional[torch.Tensor]:
        """``W_QKV (d_model, 3·n_heads·d_head)``: the heads' query, key and value maps side by side.

        Cached (a copy of the three maps) while it is at most :data:`FUSED_QKV_MAX_BYTES`;
        ``None`` above that, where the projections run per map without the copy. Rebuilt when a
        weight changes in place (its ``_version``) or is moved or replaced (its storage: the cache
        holds the weights it was built from, so their storage cannot be reused meanwhile)."""
        P = self._parameters
        ws = (P["W_Q"], P["W_K"], P["W_V"])
        if 3 * ws[0].numel() * ws[0].element_size() > FUSED_QKV_MAX_BYTES:
            return None
        key = [x for w in ws for x in (w.data_ptr(), w._version)]
        if self.__dict__.get("_flat_key") != key:
            h, d, e = ws[0].shape
            flat = lambda w: w.detach().permute(1, 0, 2).reshape(d, h * e)
            self._flat_cache = (torch.cat([flat(w) for w in ws], dim=1), ws)
            self._flat_key = key
        return self._flat_cache[0]

    def _causal_bias(self, T: int, like: torch.Tensor) -> torch.Tensor:
        """``(T, T)``: 0 on and below the diagonal, −inf above (cached)."""
        m = self.__dict__.get("_bias_cache")
        if m is None or m.shape[0] < T or m.dtype != like.dtype or m.device != like.device:
            m = torch.zeros(T, T, dtype=like.dtype, device=like.device)
            m.masked_fill_(torch.ones(T, T, dtype=torch.bool, device=like.device).triu(1), float("-inf"))
            self._bias_cache = m
        return m[:T, :T]

    def forward(self, h: torch.Tensor, hook: HookManager, l: int, kv: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Queries from ``h``; keys and values from ``kv`` (default ``h``, causal ``mask``: True = hidden).

        The projections are one matrix product with the heads' weights side by side (as a
        fused QKV layer), the scores one batched ``baddbmm`` with the mask as an additive
        ``−inf`` bias; every hook point sees the per-head tensors named as in TransformerLens
        (``hook_q`` ``(b, t, h, e)``, ``hook_attn_scores`` ``(b, h, q, k)``, …)."""
        W_QKV = self._flat()
        nh, e = self.W_Q.shape[0], self.d_head
        B, T = h.shape[0], h.shape[1]
        if W_QKV is None:  # large maps: per map, (b, 1, t, d) @ (h, d, e), no fused copy
            kv_ = h if kv is None else kv
            S = kv_.shape[1]
            q, k, v = h.unsqueeze(1) @ self.W_Q, kv_.unsqueeze(1) @ self.W_K, kv_.unsqueeze(1) @ self.W_V
        elif kv is None:
            S = T
            qkv = (h @ W_QKV).view(B, T, 3, nh, e).permute(2, 0, 3, 1, 4)  # (3, b, h, t, e), views
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            S = kv.shape[1]
            q = (h @ W_QKV[:, :nh * e]).view(B, T, nh, e).transpose(1, 2).contiguous()
            kvp = (kv @ W_QKV[:, nh * e:]).view(B, S, 2, nh, e).permute(2, 0, 3, 1, 4).contiguous()
            k, v = kvp[0], kvp[1]
        if self.bias:
            q = q + self.b_Q[:, None, :]
            k = k + self.b_K[:, None, :]
        # causal self-attention of the paper block: torch's fused kernel computes softmax(q·kᵀ/√e)·v (its
        # normalisation after the weighted sum is within the few ulps docs/certificate.md assumes); a
        # pass with hooks uses it too unless a hook replaces the scores or the pattern, so read-only hooks
        # leave the arithmetic unchanged
        fused = kv is None and mask is None and not self.bias
        if not hook.active:
            if fused:
                return self._out(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2))
        else:  # hook points see (b, t, h, e); a returned tensor replaces the activation
            q, k, v = (hook.block(l, f"attn.hook_{n}", x.transpose(1, 2)).transpose(1, 2)
                       for n, x in (("q", q), ("k", k), ("v", v)))
        bias = self._causal_bias(T, q) if mask is None else \
            torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(mask, float("-inf"))
        raw = torch.baddbmm(bias, q.reshape(B * nh, T, e), k.reshape(B * nh, S, e).transpose(1, 2),
                            alpha=1.0 / math.sqrt(e)).view(B, nh, T, S)
        scores = hook.block(l, "attn.hook_attn_scores", raw)
        soft = torch.softmax(scores, dim=-1)
        pattern = hook.block(l, "attn.hook_pattern", soft)
        if fused and scores is raw and pattern is soft:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            z = torch.bmm(pattern.reshape(B * nh, T, S), v.reshape(B * nh, S, e)).view(B, nh, T, e)
        out = self._out(hook.block(l, "attn.hook_z", z.transpose(1, 2)))
        return out + self.b_O if self.bias else out

    def _out(self, z: torch.Tensor) -> torch.Tensor:
        """``(b, t, h, e)`` head outputs → ``(b, t, d_model)`` through ``W_O``."""
        B, T, nh, e = z.shape
        return z.reshape(B, T, nh * e) @ self.W_O.reshape(nh * e, -1)


class MLP(nn.Module):
    """``W_out·GeLU(W_in·x + b_in) + b_out`` with the exact GeLU (``act_fn="gelu"``) or GPT-2's (``"gelu_new"``)."""

    def __init__(self, cfg: ConstructedTransformerConfig):
        super().__init__()
        self.act = activation(cfg.act_fn)
        z = lambda *s: nn.Parameter(torch.zeros(*s, dtype=cfg.dtype), requires_grad=False)
        self.W_in, self.b_in = z(cfg.d_model, cfg.d_mlp), z(cfg.d_mlp)
        self.W_out, self.b_out = z(cfg.d_mlp, cfg.d_model), z(cfg.d_model)
        self.unit_labels: List[str] = []

    def forward(self, x: torch.Tensor, hook: HookManager, l: int) -> torch.Tensor:
        pre = hook.block(l, "mlp.hook_pre", x @ self.W_in + self.b_in)
        post = hook.block(l, "mlp.hook_post", self.act(pre))
        return post @ self.W_out + self.b_out


class Block(nn.Module):
    """One layer: Eq. 4 (``block="paper"``: attention, residual, LayerNorm, MLP, residual) or
    GPT-2's (``block="pre_ln"``: a LayerNorm in front of attention as well). LayerNorms are
    over the full column, without affine parameters."""

    def __init__(self, cfg: ConstructedTransformerConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.ln_eps = cfg.ln_eps
        self.pre_ln = cfg.block == "pre_ln"

    def _ln(self, x: torch.Tensor, hook: HookManager, l: int, which: str) -> torch.Tensor:
        if hook.active:
            var = x.var(dim=-1, unbiased=False, keepdim=True)
            hook.block(l, which + ".hook_scale", torch.sqrt(var + self.ln_eps))
        return hook.block(l, which + ".hook_normalized", F.layer_norm(x, (x.shape[-1],), eps=self.ln_eps))

    def forward(self, h: torch.Tensor, hook: HookManager, l: int, kv: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.mlp_sublayer(self.attn_sublayer(h, hook, l, kv=kv, mask=mask), hook, l)

    def attn_sublayer(self, h: torch.Tensor, hook: HookManager, l: int, kv: Optional[torch.Tensor] = None,
                      mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``h + a``: the residual stream after the attention sublayer (Eq. 4, first half).

        ``kv``/``mask``: keys and values from other columns' states (a key/value cache)."""
        h = hook.block(l, "hook_resid_pre", h)
        if self.pre_ln:
            h_in = self._ln(h, hook, l, "ln1")
            kv = None if kv is None else F.layer_norm(kv, (kv.shape[-1],), eps=self.ln_eps)
        else:
            h_in = h
        a = hook.block(l, "hook_attn_out", self.attn(h_in, hook, l, kv=kv, mask=mask))
        return hook.block(l, "hook_resid_mid", h + a)

    def mlp_sublayer(self, mid: torch.Tensor, hook: HookManager, l: int) -> torch.Tensor:
        """``mid + MLP(LayerNorm(mid))`` (Eq. 4, second half)."""
        x = self._ln(mid, hook, l, "ln2")
        m = hook.block(l, "hook_mlp_out", self.mlp(x, hook, l))
        return hook.block(l, "hook_resid_post", mid + m)


def block_segments(schedule: Schedule) -> List[Tuple[List[int], SegmentPlan]]:
    """``(block indices, segment)`` for every segment of ``schedule``: one block per layer plan, in order."""
    out, i = [], 0
    for seg in schedule.segments:
        out.append((list(range(i, i + len(seg.layers))), seg))
        i += len(seg.layers)
    return out


class ConstructedTransformer(nn.Module):
    """A transformer whose weights were compiled from a :class:`~iclconstruct.lang.program.Program`.

    Call it on tokens ``(B, T, d+1)`` (see :func:`iclconstruct.tokens.encode`) to get the
    readout row at every x̃ column, ``(B, ⌈T/2⌉)`` (or at every column, ``(B, T)``, for
    programs whose readout is ``columns='all'``). Numpy in gives numpy out.

    Attributes:
        cfg: the architecture (:class:`ConstructedTransformerConfig`, named as in
            TransformerLens); ``d_model``, ``n_heads``, ``d_head``, ``d_mlp``, ``max_len``,
            ``dtype``, ``block_style`` read it.
        program, layout, schedule, constants: what it was compiled from (the program is a
            frozen copy owned by the model).
        row_labels: the slot label of every residual row.
    """

    #: the anchors ``compile`` tried and their certificates (``choose_constants``), or ``None``
    constant_search = None

    def __init__(self, cfg: ConstructedTransformerConfig, *, program: Program, schedule: Schedule,
                 constants: Constants, layers: Iterable[LayerWeights], W_E: np.ndarray, W_pos: np.ndarray,
                 operand_scales: Optional[dict] = None):
        super().__init__()
        self.cfg = cfg
        self.program = program if program.is_frozen else program.frozen()
        self.layout: Layout = self.program.layout
        self.schedule = schedule
        self.constants = constants
        #: ``{id(op): (s_lhs, s_rhs)}``: the scales each product was built with (range analysis)
        self.operand_scales = dict(operand_scales or {})
        t = lambda a: nn.Parameter(torch.as_tensor(a, dtype=cfg.dtype), requires_grad=False)
        self.W_E = t(W_E)
        self.W_pos = t(W_pos)
        self.blocks = nn.ModuleList()
        self.plans: List[LayerPlan] = []
        layers = iter(layers)  # a list, or a generator that builds each layer when asked (compile)
        for plan in [p for seg in schedule.segments for p in seg.layers]:
            lw = next(layers, None)  # not zip(): its reused result tuple would keep the previous layer alive
            if lw is None:
                break
            blk = Block(cfg)
            with torch.no_grad():
                for i, hw in enumerate(lw.heads):
                    blk.attn.W_Q[i] = torch.as_tensor(hw.W_Q)
                    blk.attn.W_K[i] = torch.as_tensor(hw.W_K)
                    blk.attn.W_V[i] = torch.as_tensor(hw.W_V)
                    blk.attn.W_O[i] = torch.as_tensor(hw.W_O)
                    if blk.attn.bias:
                        blk.attn.b_Q[i] = torch.as_tensor(hw.b_Q)
                        blk.attn.b_K[i] = torch.as_tensor(hw.b_K)
                        blk.attn.b_O += torch.as_tensor(hw.b_O)
                blk.mlp.W_in.copy_(torch.as_tensor(lw.mlp.W_in))
                blk.mlp.b_in.copy_(torch.as_tensor(lw.mlp.b_in))
                blk.mlp.W_out.copy_(torch.as_tensor(lw.mlp.W_out))
                blk.mlp.b_out.copy_(torch.as_tensor(lw.mlp.b_out))
            blk.attn.head_labels = [hw.label for hw in lw.heads]
            blk.mlp.unit_labels = lw.mlp.labels
            self.blocks.append(blk)
            self.plans.append(plan)
            del lw  # free this layer's numpy weights before the next layer is built
        # execution plan: (block indices, repeat) per segment
        self._segments: List[Tuple[List[int], SegmentPlan]] = block_segments(schedule)
        self.hooks = HookManager()
        self._null_hooks = HookManager()  # the pruned runtime runs without hooks
        self.row_labels = self.layout.row_labels() + [""] * (cfg.d_model - self.layout.size)

    # ------------------------------------------------------------------ shape facts (from the config)
    d_model = property(lambda self: self.cfg.d_model, doc="residual width ``D``")
    n_heads = property(lambda self: self.cfg.n_heads, doc="attention heads per layer")
    d_head = property(lambda self: self.cfg.d_head, doc="width of each head")
    d_mlp = property(lambda self: self.cfg.d_mlp, doc="MLP hidden units per layer")
    max_len = property(lambda self: self.cfg.max_len, doc="most tokens the position embedding holds")
    dtype = property(lambda self: self.cfg.dtype, doc="parameter dtype")
    block_style = property(lambda self: self.cfg.block, doc="block style (``'paper'``: Eq. 4)")

    @property
    def d(self) -> int:
        return self.layout.d

    @property
    def n_layers_unique(self) -> int:
        """Distinct layers (a loop body counts once)."""
        return len(self.blocks)

    def depth(self, n_examples: Optional[int] = None) -> int:
        """Layers run for ``n_examples`` examples (default: the loop bodies counted once)."""
        T = 2 if n_examples is None else 2 * n_examples
        return sum(len(idx) * seg.times(T) for idx, seg in self._segments)

    def layers_per_example(self) -> int:
        """Layers of the weight-tied per-example block (0 if the program has no loop)."""
        return sum(len(idx) for idx, seg in self._segments if seg.repeat == "examples")

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def unrolled(self, T: int) -> List[int]:
        """Block index run at each layer for a sequence of ``T`` tokens."""
        out: List[int] = []
        for idx, seg in self._segments:
            out.extend(idx * seg.times(T))
        return out

    # ------------------------------------------------------------------ forward
    def _prepare(self, tokens) -> Tuple[torch.Tensor, bool]:
        numpy_in = not isinstance(tokens, torch.Tensor)
        if numpy_in:
            t = torch.as_tensor(as_real_array(tokens, "tokens"))
        else:
            t = as_real_tensor(tokens, "tokens")
            if t.device != self.W_E.device:
                raise ArgumentError(f"tokens are on {t.device} but the model is on {self.W_E.device}; "
                                    f"move one of them (tokens.to({str(self.W_E.device)!r}))")
        if t.dim() == 2:
            t = t.unsqueeze(0)
        if t.dim() != 3 or t.shape[-1] != self.d + 1:
            raise ShapeError(
                f"tokens must be (B, T, d+1) = (B, T, {self.d + 1}); got shape {tuple(t.shape)}. "
                f"Build them with iclconstruct.tokens.encode(X, y, x_query) for d = {self.d}"
            )
        given = t  # the caller's values: the range checks judge these, not their rounding to the model's dtype
        t = t.to(device=self.W_E.device, dtype=self.dtype)
        if not torch.isfinite(t).all():
            raise NonFiniteError("tokens contain NaN or infinity; pass finite inputs")
        T = t.shape[1]
        if T > self.max_len:
            raise ContextTooLongError(
                f"{T} tokens exceed max_len={self.max_len} of the position units; compile with max_len >= {T}"
            )
        check_tokens_layout(t, "tokens")
        absmax = lambda v: float(v.abs().max()) if v.numel() else 0.0
        check_inputs(self.layout, absmax(given[..., :1]), absmax(given[..., 1:]))
        check_guards(self.program.guards, t.detach().cpu().numpy())
        return t, numpy_in

    def residual(self, tokens, *, check: bool = True) -> torch.Tensor:
        """Final residual stream ``(B, T, D)`` (torch)."""
        t, _ = self._prepare(tokens)
        return self._run(t, check)

    def _run(self, t: torch.Tensor, check: bool) -> torch.Tensor:
        T = t.shape[1]
        hook = self.hooks
        hook.reset_replaced()  # counts activations a hook replaces in this pass (a patched pass is not checked a posteriori)
        h = hook("hook_embed", t @ self.W_E) + hook("hook_pos_embed", self.W_pos[:T].expand(t.shape[0], T, -1))
        mon = RangeMonitor(self) if check else None  # batched: one host sync per pass
        for l, bi in enumerate(self.unrolled(T)):
            h = mon.layer(self.blocks[bi], h, l, bi, hook) if mon is not None else self.blocks[bi](h, hook, l)
        if mon is not None:
            mon.verify()
        return h

    def _readout(self, h: torch.Tensor) -> torch.Tensor:
        return readout(self.program, h)

    def _verification(self, tokens, h: torch.Tensor, out: torch.Tensor, columns=None, enforce: bool = True):
        """A-posteriori bounds of the readout ``out`` (see :mod:`iclconstruct.numerics.aposteriori`). ``h``: the
        final residual stream ``(B, T, D)``, read at the readout columns; or, with ``columns``, the states
        ``(B, C, D)`` at those token columns. ``enforce``: ``None`` unless the program declares a check that
        states an accuracy for the model's dtype (else: bounds by recomputation where none is declared)."""
        from ..numerics.aposteriori import BOUNDS_ONLY, accuracy_for, host_tokens, spec_for, verify_columns

        spec = spec_for(self.program)
        if enforce and (spec is None or accuracy_for(spec, self.dtype) is None):
            return None
        if self.program.readout_slot is None:
            return None
        step = 2 if self.program.readout_columns == "x" else 1
        if columns is None:
            cols = np.arange(0, h.shape[1], step)
            h = h[:, 0::step]
        else:
            cols = np.asarray(columns, dtype=np.int64)
        return verify_columns(self.program, self.dtype, host_tokens(tokens), cols, h, out, spec=spec or BOUNDS_ONLY,
                              model=self)

    def _replay_bounds(self, tokens: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
        """``(B, 1)`` recomputation bounds of the last column's readout ``y_hat``, on the pruned schedule
        (:func:`~iclconstruct.numerics.replay_bound.bounded_replay`)."""
        from ..numerics.recompute import readout_bounds
        from ..numerics.replay_bound import bounded_replay
        from ..runtime.stream import cell_plan

        T = tokens.shape[1]
        H, E, _ = bounded_replay(self, tokens, cell_plan(self, T, "last", True))
        return readout_bounds(self.program, H, E, [T - 1], y_hat)

    def _check_predictions(self, tokens, h: torch.Tensor, out: torch.Tensor, columns=None, patched: bool = False) -> None:
        """Refuse (:class:`~iclconstruct.errors.PrecisionError`) readouts the a-posteriori check cannot prove.

        ``patched``: a hook replaced an activation in this pass (activation patching); the model then
        computes what the patch makes it compute, not the circuit, and is not checked."""
        from ..numerics.aposteriori import refuse

        if patched:
            return
        v = self._verification(tokens, h, out, columns)
        if v is not None:
            refuse(self.program, v)

    def verify(self, tokens, *, check: bool = True):
        """Per-prediction a-posteriori error bounds of ``model(tokens)``, without refusing.

        Returns a :class:`~iclconstruct.numerics.aposteriori.Verification` (``predictions``,
        ``bounds``, ``tolerance``, ``ok``): ``bounds`` are rigorous bounds on ``|prediction − exact|`` —
        exact ridge on the same prefix for the ridge circuit (a residual bound), the exact program's
        readout for every other program (the float64 interpreter re-run with a rigorous round-off
        bound, :mod:`iclconstruct.numerics.recompute`). ``tolerance`` is ``inf`` where the model states
        no accuracy for its dtype. ``check``: the run-time range checks (they still raise).
        """
        t, _ = self._prepare(tokens)
        with torch.no_grad():
            h = self._run(t, check)
            out = self._readout(h)
        return self._verification(tokens, h, out, enforce=False)

    def forward(self, tokens, *, check: bool = True):
        """Readout at every x̃ column ``(B, ⌈T/2⌉)`` (or every column for ``columns='all'``).

        With ``check=True`` (default) inputs, divisors and every written slot are checked
        against the ranges the approximation constants were designed for, and circuits that
        declare an a-posteriori check (ridge) refuse predictions whose rigorous error bound
        exceeds their stated accuracy (:class:`~iclconstruct.errors.PrecisionError`) — except
        in a pass where a hook replaced an activation (activation patching: the patched model
        is not the circuit).
        """
        t, numpy_in = self._prepare(tokens)
        with torch.no_grad():
            h = self._run(t, check)
            out = self._readout(h)
        if check:
            self._check_predictions(tokens, h, out, patched=self.hooks.replaced > 0)
        return out.cpu().numpy() if numpy_in else out

    def run_with_cache(self, tokens, *, names_filter=None, check: bool = True):
        """``(output, ActivationCache)`` keyed TransformerLens-style (``blocks.{l}.hook_resid_post`` ...)."""
        t, numpy_in = self._prepare(tokens)
        store: Dict[str, torch.Tensor] = {}

        def save(x, name):
            store[name] = x.detach()

        with self.hooks.temporary(names_filter, save), torch.no_grad():  # this thread only
            h = self._run(t, check)
            out = self._readout(h)
        if check:
            self._check_predictions(tokens, h, out, patched=self.hooks.replaced > 0)
        return (out.cpu().numpy() if numpy_in else out), ActivationCache(store, self)

    def add_hook(self, names_filter, fn) -> None:
        """Call ``fn(activation, name)`` at every matching hook (may return a replacement)."""
        self.hooks.add(names_filter, fn)

    def reset_hooks(self) -> None:
        self.hooks.clear()

    # ------------------------------------------------------------------ convenience
    def predict(self, X, y, x_query, *, check: bool = True):
        """Prediction for ``x_query`` after all ``n`` examples.

        ``X`` ``(n, d)`` or ``(B, n, d)``, ``y`` ``(n,)`` or ``(B, n)``, ``x_query`` ``(d,)`` or
        ``(B, d)``; returns shape ``()`` or ``(B,)``; numpy in, numpy out; torch in, torch out.
        ``check``: the run-time checks of :meth:`forward` (range checks, and the a-posteriori
        accuracy check of the ridge circuit).
        """
        if x_query is None:
            raise ArgumentError(
                "x_query is missing (None): predict(X, y, x_query) predicts the label of x_query after all n "
                "examples; for the prediction at every prefix use predict_prefixes(X, y)")
        numpy_in = not isinstance(X, torch.Tensor)
        Xa = as_real_tensor(X, "X") if not numpy_in else as_real_array(X, "X")
        if Xa.ndim not in (2, 3):
            raise ShapeError(f"X must be (n, d) or (B, n, d); got shape {tuple(Xa.shape)}")
        if Xa.shape[-1] != self.d:
            raise ShapeError(f"X has d = {Xa.shape[-1]} features but the model was built for d = {self.d}")
        if Xa.shape[-2] == 0:
            raise ShapeError("X has no examples (n = 0); pass at least one (x, y) pair")
        tok = encode(X if not numpy_in else Xa, y, x_query, dtype=self.dtype if not numpy_in else None)
        out = self.forward(tok, check=check)[:, -1]
        if Xa.ndim == 2:
            out = out[0]
        return out

    def predict_prefixes(self, X, y, *, check: bool = True):
        """``out[:, k]``: the prediction for ``x_{k+1}`` from the first ``k`` examples, for ``k = 0..n−1``.

        Equal (in exact arithmetic) to one full forward pass over ``x̃_1, ỹ_1, …, x̃_n, ỹ_n``
        (no query), but run on the dependency-pruned schedule: only the (column, layer) cells
        the readout depends on (:mod:`iclconstruct.runtime.stream`). ``(B, n)`` (or ``(n,)``
        unbatched); numpy in, numpy out; torch in, torch out on the model's device.
        """
        from ..runtime.stream import predict_prefixes

        return predict_prefixes(self, X, y, check=check)

    def stream(self, *, check: bool = True):
        """A :class:`~iclconstruct.runtime.stream.Stream`: ``s.add(x, y)`` examples, ``s.predict(x_query)`` any time."""
        from ..runtime.stream import Stream

        return Stream(self, check=check)

    def to_sparse(self) -> "ConstructedTransformer":
        """A copy running on structured-sparse weights (:mod:`iclconstruct.runtime.sparse`)."""
        from ..runtime.sparse import sparse_model

        return sparse_model(self)

    def to_dense(self) -> "ConstructedTransformer":
        """A copy with dense weights, entry for entry (for export, every hook point, inspection)."""
        from ..runtime.sparse import dense_model

        return dense_model(self)

    @property
    def is_sparse(self) -> bool:
        return not all(isinstance(b, Block) for b in self.blocks)

    @property
    def device(self) -> torch.device:
        """Where the weights live (``model.to(device)`` moves them; inputs follow)."""
        return self.W_E.device

    def to_transformer_lens(self, n_examples: int):
        """This model (``block='pre_ln'``) as a stock ``transformer_lens.HookedTransformer`` for
        ``n_examples`` examples (loops unrolled); see :func:`iclconstruct.export.to_transformer_lens`."""
        from ..export import to_transformer_lens

        return to_transformer_lens(self, n_examples)

    def to_hf(self, n_examples: int):
        """This model (``block='pre_ln'``) as a stock Hugging Face ``GPT2LMHeadModel`` for
        ``n_examples`` examples (loops unrolled); see :func:`iclconstruct.export.to_hf`."""
        from ..export import to_hf

        return to_hf(self, n_examples)

    def save(self, path, **kw) -> None:
        """Save into folder ``path`` (``model.safetensors`` + ``circuit.json``); see :func:`iclconstruct.io.save`
        (a sparse model is saved dense; ``max_dense_bytes=`` bounds that)."""
        save(self, path, **kw)

    def certify(self, n_examples: int):
        """A rigorous bound on ``|readout − exact program readout|`` for contexts of up to ``n_examples`` examples.

        Returns a :class:`~iclconstruct.numerics.certificate.Certificate` (``max_abs_error``,
        ``per_prediction``, ``per_slot``); see :func:`iclconstruct.numerics.certificate.certify`.
        """
        from ..numerics.certificate import certify

        return certify(self, n_examples)

    def error_budget(self) -> Dict[str, float]:
        """Per-trick error terms of the certificate for one example (superseded by :meth:`certify`).

        Keys: ``product_abs_max`` (truncation + round-off of the worst product),
        ``layernorm_rel`` (relative scale error of Lemma 6/8 readings), ``attention_leak``
        (``2e^{−A}``), ``max_abs_error`` (the end-to-end bound of :meth:`certify` at ``n = 1``).
        """
        n = 1 if self.max_len >= 3 else 0
        cert = self.certify(n)
        t = cert.terms
        extra = {}
        if self.block_style == "pre_ln":  # the attention-side LayerNorm (Lemma 6, anchors pre_ln_anchor, folded)
            c, lay = self.constants, self.layout
            user = [s for s in lay.user_slots() if s.name not in ("pos", "one", "is_y")]
            norm_sq = sum(s.size * s.bound ** 2 for s in user) + 4.0
            extra["attention_layernorm_rel"] = norm_sq / (4 * c.pre_ln_anchor ** 2) + 2.0 ** -52
            divisors = [lay[p.divisor] for p in self.plans if p.divisor is not None]
            if divisors:  # the attention after a div layer still sees the pair ±M·c
                mc = c.div_scale * max(s.bound for s in divisors)
                extra["attention_after_div_rel"] = (2 * mc * mc + norm_sq) / (4 * c.pre_ln_anchor ** 2)
        return {
            **extra,
            "product_abs_max": t.get("product_truncation", 0.0) + t.get("roundoff", 0.0),
            "layernorm_rel": t.get("layernorm", 0.0),
            "div_rel_at_div_min": t.get("division", 0.0),
            "attention_leak": 2.0 * math.exp(-self.constants.attn_hardness),
            "max_abs_error": cert.max_abs_error,
        }

    def summary(self) -> str:
        """Depth, width, MLP width, heads, parameters, the layers with their ops, and the slot layout."""
        lines = [
            f"ConstructedTransformer {self.program.name!r}  (block style {self.block_style!r}, {str(self.dtype).replace('torch.', '')})",
            f"  d = {self.d}   width D = {self.d_model}   MLP width = {self.d_mlp}   heads = {self.n_heads} x d_head {self.d_head}",
            f"  distinct layers = {self.n_layers_unique}   layers per example = {self.layers_per_example()}   "
            f"parameters = {self.n_params():,}   max_len = {self.max_len}",
        ]
        c = self.constants
        lines.append(f"  constants: product_scale N = {c.product_scale:g} (order {c.product_order:g})   "
                     f"ln_anchor K = {c.ln_anchor:g}   div_scale M = {c.div_scale:g}   attn_hardness A = {c.attn_hardness:g}")
        for si, (idx, seg) in enumerate(self._segments):
            head = f"loop x {seg.repeat}" if seg.repeat != 1 else "straight"
            lines.append(f"  segment {si} ({head}):")
            for bi in idx:
                lines.append(f"    layer {bi}: {self.plans[bi].describe()}")
        lines.append("  slots:")
        lines += ["    " + ln for ln in self.layout.table().splitlines()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        """``print(model)`` shows :meth:`summary`: layers, the ops packed into each, the slot layout."""
        return self.summary()

    def extra_repr(self) -> str:
        return (f"d={self.d}, d_model={self.d_model}, d_mlp={self.d_mlp}, n_heads={self.n_heads}, "
                f"d_head={self.d_head}, layers={self.n_layers_unique}, per_example={self.layers_per_example()}")
