"""The MLP activations of the compiled layers (Eq. 4's GeLU), shared by the dense and the sparse blocks."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gelu_new", "activation"]


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh GeLU ``x/2·(1 + tanh(√(2/π)(x + 0.044715x³)))``, written as TransformerLens and
    Hugging Face write ``gelu_new``, so that exported models round the same way."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def activation(name: str):
    """The function of ``act_fn`` ``name``: ``'gelu'`` (exact, erf) or ``'gelu_new'`` (GPT-2's tanh GeLU)."""
    return gelu_new if name == "gelu_new" else F.gelu
