"""The architecture of a compiled model in one object (as TransformerLens' ``HookedTransformerConfig``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Tuple, Union

import torch

from ..errors import ICLConstructError

__all__ = ["ConstructedTransformerConfig", "BLOCK_STYLES", "ACT_FNS"]

#: block styles the compiler can emit. "paper": Eq. 4 (LayerNorm only in front of the MLP).
BLOCK_STYLES = ("paper",)
#: activation functions of the MLP: the exact (erf) GeLU of Eq. 4
ACT_FNS = ("gelu",)
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class ConstructedTransformerConfig:
    """Everything that fixes the shape and the computation of a :class:`ConstructedTransformer`.

    Attributes:
        n_layers: distinct layers (a weight-tied loop body counts once).
        d_model: residual width ``D``. n_heads, d_head: attention heads per layer and their width.
        d_mlp: MLP hidden units per layer. d_vocab: token channels (``d + 1``: ``y`` then ``x``).
        max_len: most tokens the position embedding holds (``n_ctx`` in TransformerLens).
        segments: ``(layers, repeat)`` per program segment, in order: the layers of a segment
            run ``repeat`` times (``'examples'``: once per (x, y) example of the input).
        block: block style (``'paper'``: Eq. 4, LayerNorm in front of the MLP only).
        act_fn: MLP activation (``'gelu'``, exact). ln_eps: ``eps`` of LayerNorm (no affine
            parameters, over the full hidden vector). dtype: parameter dtype.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    max_len: int
    segments: Tuple[Tuple[int, Union[int, str]], ...]
    block: str = "paper"
    act_fn: str = "gelu"
    ln_eps: float = 1e-5
    dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        if self.block not in BLOCK_STYLES:
            raise ICLConstructError(f"block={self.block!r} is not supported yet; available: {', '.join(BLOCK_STYLES)}")
        if self.act_fn not in ACT_FNS:
            raise ICLConstructError(f"act_fn={self.act_fn!r} is not supported; available: {', '.join(ACT_FNS)}")
        if self.dtype not in _DTYPES.values():
            raise ICLConstructError(f"dtype must be torch.float64 or torch.float32; got {self.dtype}")
        for name in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "max_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "n_layers" else 1):
                raise ICLConstructError(f"config {name} must be a positive integer; got {v!r}")
        if sum(n for n, _ in self.segments) != self.n_layers:
            raise ICLConstructError(f"config segments {self.segments} do not add up to n_layers = {self.n_layers}")

    def to_dict(self) -> dict:
        """JSON-able (dtype as ``'float64'``/``'float32'``, segments as lists)."""
        d = asdict(self)
        d["dtype"] = str(self.dtype).replace("torch.", "")
        d["segments"] = [list(s) for s in self.segments]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ConstructedTransformerConfig":
        d = dict(d)
        if d.get("dtype") not in _DTYPES:
            raise ICLConstructError(f"config dtype must be one of {sorted(_DTYPES)}; got {d.get('dtype')!r}")
        d["dtype"] = _DTYPES[d["dtype"]]
        d["segments"] = tuple(tuple(s) for s in d["segments"])
        return cls(**d)
