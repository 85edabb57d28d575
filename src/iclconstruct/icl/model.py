"""The trained in-context learner (Akyürek et al. 2023, App. D; architecture of Garg et al. 2022).

A GPT-2-style decoder in plain PyTorch::

    h⁰ = Dense(d+1 → width)(tokens) + P[pos]           learned absolute positions
    hˡ = hˡ⁻¹ + Attn(LN(hˡ⁻¹));  hˡ += MLP(LN(hˡ))     causal attention, GeLU MLP (4× width)
    ŷ  = Dense(width → 1)(LN(h^L))                      read at the x̃ columns

Tokens follow :mod:`iclconstruct.tokens` (x̃ = [0; x], ỹ = [y; 0]); the prediction at column
``2i`` (x̃_{i+1}) uses the first ``i`` examples. ``max_points`` is the number of x̃ columns the
position table covers, so a query may follow at most ``max_points - 1`` examples.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .. import tokens as _tokens
from ..errors import ContextTooLongError, ShapeError

__all__ = ["ModelConfig", "ICLTransformer"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the architecture (saved next to every checkpoint)."""

    d: int
    n_layers: int
    width: int
    n_heads: int
    max_points: int
    mlp_ratio: int = 4

    def __post_init__(self):
        for k in ("d", "n_layers", "width", "n_heads", "max_points", "mlp_ratio"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ShapeError(f"ModelConfig.{k} must be a positive integer; got {v!r}")
        if self.width % self.n_heads:
            raise ShapeError(f"width ({self.width}) must be divisible by n_heads ({self.n_heads})")

    @property
    def max_tokens(self) -> int:
        return 2 * self.max_points - 1

    def to_dict(self) -> dict:
        return {k: int(v) for k, v in asdict(self).items()}


class CausalSelfAttention(nn.Module):
    """Multi-head causal softmax attention (paper Eq. 1 with a causal mask)."""

    def __init__(self, width: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(h), "b t (three h e) -> three b h t e", three=3, h=self.n_heads)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(rearrange(out, "b h t e -> b t (h e)"))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention then GeLU MLP, each with a residual."""

    def __init__(self, width: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, n_heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.ln1(h))
        return h + self.mlp(self.ln2(h))


class ICLTransformer(nn.Module):
    """Decoder transformer trained to regress in context (paper App. D).

    Args:
        d: input dimension (tokens have ``d + 1`` channels).
        n_layers, width, n_heads: depth, residual width, attention heads.
        max_points: number of x̃ columns the learned position table covers (context ≤ max_points − 1).
        mlp_ratio: MLP hidden width as a multiple of ``width`` (paper: 4).
        seed: if given, the initial weights come from a private generator seeded with it (the
            global torch RNG is neither read nor advanced), so the same seed gives bit-identical
            weights on every device; ``None`` draws from the global torch RNG.
    """

    def __init__(self, d: int, n_layers: int, width: int, n_heads: int, max_points: int, mlp_ratio: int = 4,
                 seed: Optional[int] = None):
        super().__init__()
        self.config = ModelConfig(d, n_layers, width, n_heads, max_points, mlp_ratio)
        self.read_in = nn.Linear(d + 1, width)
        self.pos = nn.Parameter(torch.zeros(self.config.max_tokens, width))
        self.blocks = nn.ModuleList(Block(width, n_heads, mlp_ratio) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(width)
        self.read_out = nn.Linear(width, 1)
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: Optional[int] = None) -> "ICLTransformer":
        """GPT-2 initialisation: every Linear weight and the position table ~ N(0, 0.02²), biases 0,
        LayerNorms at identity. With ``seed`` the draws come from ``torch.Generator().manual_seed(seed)``
        on the CPU (then copied to the parameters' device), in a fixed module order."""
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None

        def normal(p: torch.Tensor) -> None:
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * 0.02)

        for m in self.modules():
            if isinstance(m, nn.Linear):
                normal(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        normal(self.pos)
        return self

    @classmethod
    def from_config(cls, cfg, seed: Optional[int] = None) -> "ICLTransformer":
        cfg = cfg if isinstance(cfg, ModelConfig) else ModelConfig(**cfg)
        return cls(**cfg.to_dict(), seed=seed)

    # ------------------------------------------------------------------ forward passes
    def _check_tokens(self, tok: torch.Tensor) -> None:
        if tok.dim() != 3 or tok.shape[-1] != self.config.d + 1:
            raise ShapeError(f"tokens must be (B, T, d+1 = {self.config.d + 1}); got {tuple(tok.shape)}")
        if tok.shape[1] > self.config.max_tokens:
            raise ContextTooLongError(
                f"{tok.shape[1]} tokens exceed the model's {self.config.max_tokens} positions "
                f"(max_points = {self.config.max_points}); pass at most {self.config.max_points - 1} examples"
            )

    def hidden_states(self, tok: torch.Tensor) -> List[torch.Tensor]:
        """Residual stream after the embedding and after each block: ``n_layers + 1`` tensors (B, T, width)."""
        self._check_tokens(tok)
        h = self.read_in(tok) + self.pos[: tok.shape[1]]
        hs = [h]
        for blk in self.blocks:
            h = blk(h)
            hs.append(h)
        return hs

    def forward(self, tok: torch.Tensor) -> torch.Tensor:
        """Predictions ``(B, T)`` at every column (meaningful at x̃ columns 0, 2, 4, ...)."""
        return self.read_out(self.ln_f(self.hidden_states(tok)[-1]))[..., 0]

    def forward_xy(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training view: predictions ``(B, n)`` of ``y_i`` from ``x_1, y_1, ..., x_i`` (last ỹ dropped)."""
        tok = _tokens.encode(X, y)[:, :-1]
        return self(tok)[:, 0::2]

    # ------------------------------------------------------------------ predictor interface
    def _device_dtype(self):
        p = self.read_out.weight
        return p.device, p.dtype

    @torch.no_grad()
    def predict(self, X, y, x_query, batch_size: int = 4096) -> np.ndarray:
        """Prediction ``(B,)`` at ``x_query`` after the examples ``(X, y)``; numpy float64 out.

        Accepts numpy or torch ``X (B, n, d)``, ``y (B, n)``, ``x_query (B, d)`` (like the circuits).
        """
        device, dtype = self._device_dtype()
        tok = _tokens.encode(np.asarray(X, np.float64), np.asarray(y, np.float64), np.asarray(x_query, np.float64))
        tok = torch.as_tensor(tok, dtype=dtype)
        self._check_tokens(tok)
        was = self.training
        self.eval()
        out = [self(t.to(device))[:, -1].double().cpu() for t in tok.split(batch_size)]
        self.train(was)
        return torch.cat(out).numpy()

    @torch.no_grad()
    def predict_prefixes(self, X, y, batch_size: int = 4096) -> np.ndarray:
        """All prefix predictions at once: ``out[:, k]`` predicts ``y_{k+1}`` from the first ``k`` examples."""
        device, dtype = self._device_dtype()
        Xt = torch.as_tensor(np.asarray(X, np.float64), dtype=dtype)
        yt = torch.as_tensor(np.asarray(y, np.float64), dtype=dtype)
        was = self.training
        self.eval()
        out = [self.forward_xy(a.to(device), b.to(device)).double().cpu() for a, b in zip(Xt.split(batch_size), yt.split(batch_size))]
        self.train(was)
        return torch.cat(out).numpy()
