"""TransformerLens-style hooks and activation caches.

Activations are named as in TransformerLens (``hook_embed``, ``hook_pos_embed``,
``blocks.{l}.hook_resid_pre``, ``blocks.{l}.attn.hook_pattern``,
``blocks.{l}.hook_resid_post`` ...), with ``l`` the index of the layer *as run*: a
weight-tied loop body that runs ``n`` times yields ``n`` consecutive block indices.
"""
from __future__ import annotations

import contextlib
import fnmatch
import threading
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import UnknownSlotError

__all__ = ["ActivationCache", "HookManager", "HOOK_NAMES", "PRE_LN_HOOK_NAMES", "EMBED_HOOK_NAMES", "block_hook"]

#: activations before the first block
EMBED_HOOK_NAMES = ("hook_embed", "hook_pos_embed")

#: per-block activation names, in the order they are produced (the only list of them)
HOOK_NAMES = (
    "hook_resid_pre",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.hook_scale",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)

#: the GPT-2-style block (``block="pre_ln"``) adds its attention-side LayerNorm, produced right
#: after ``hook_resid_pre`` (TransformerLens' names)
PRE_LN_HOOK_NAMES = ("ln1.hook_scale", "ln1.hook_normalized")

_BLOCK_HOOKS = frozenset(HOOK_NAMES + PRE_LN_HOOK_NAMES)


def block_hook(layer: int, name: str) -> str:
    """The full name ``blocks.{layer}.{name}`` of a per-block activation; ``name`` must be in :data:`HOOK_NAMES`."""
    if name not in _BLOCK_HOOKS:
        raise KeyError(f"{name!r} is not a block activation; known: {', '.join(HOOK_NAMES + PRE_LN_HOOK_NAMES)}")
    return f"blocks.{layer}.{name}"


HookFn = Callable[[torch.Tensor, str], Optional[torch.Tensor]]
NameFilter = Union[None, str, Sequence[str], Callable[[str], bool]]


def _matcher(names_filter: NameFilter) -> Callable[[str], bool]:
    if names_filter is None:
        return lambda n: True
    if callable(names_filter):
        return names_filter
    pats = [names_filter] if isinstance(names_filter, str) else list(names_filter)
    return lambda n: any(n == p or fnmatch.fnmatchcase(n, p) for p in pats)


class HookManager:
    """Holds hook functions; the model calls :meth:`__call__` (or :meth:`block`) at every named activation.

    Two kinds of hooks: *persistent* ones (:meth:`add`, shared by every thread until
    :meth:`clear`) and *temporary* ones (:meth:`temporary`, a context manager), which are
    visible only to the thread that registered them and are removed when its ``with``
    block ends — so concurrent ``run_with_cache`` calls on one model neither see each
    other's caches nor leave hooks behind.
    """

    def __init__(self) -> None:
        self._hooks: List[Tuple[Callable[[str], bool], HookFn]] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def __getstate__(self):  # copy.deepcopy(model) works: locks and thread-locals are recreated
        return {"_hooks": list(self._hooks)}

    def __setstate__(self, state):
        self.__init__()
        self._hooks = state["_hooks"]

    def _temp(self) -> List[Tuple[Callable[[str], bool], HookFn]]:
        if not hasattr(self._local, "hooks"):
            self._local.hooks = []
        return self._local.hooks

    @property
    def active(self) -> bool:
        """Whether any hook (persistent, or temporary in this thread) is registered."""
        return bool(self._hooks) or bool(self._temp())

    def add(self, names_filter: NameFilter, fn: HookFn) -> None:
        """Call ``fn(activation, name)`` at every activation ``names_filter`` matches (it may return a replacement)."""
        with self._lock:
            self._hooks = self._hooks + [(_matcher(names_filter), fn)]

    def clear(self) -> None:
        with self._lock:
            self._hooks = []

    @contextlib.contextmanager
    def temporary(self, names_filter: NameFilter, fn: HookFn) -> Iterator["HookManager"]:
        """Add a hook for the ``with`` block only, visible to this thread only; other hooks stay as they were."""
        temp = self._temp()
        entry = (_matcher(names_filter), fn)
        temp.append(entry)
        try:
            yield self
        finally:
            temp.remove(entry)

    def block(self, layer: int, name: str, x: torch.Tensor) -> torch.Tensor:
        """The hook point ``blocks.{layer}.{name}`` (see :func:`block_hook`)."""
        if not self._hooks and not getattr(self._local, "hooks", None):
            return x  # nothing registered: skip formatting the name
        return self(block_hook(layer, name), x)

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        for match, fn in self._hooks + self._temp():
            if match(name):
                y = fn(x, name)
                if y is not None:
                    if y is not x:
                        self._local.replaced = self.replaced + 1
                    x = y
        return x

    @property
    def replaced(self) -> int:
        """Activations a hook replaced (returned a new tensor for) in this thread since :meth:`reset_replaced`."""
        return getattr(self._local, "replaced", 0)

    def reset_replaced(self) -> None:
        self._local.replaced = 0


class ActivationCache:
    """Activations of one forward pass, keyed by hook name, with slot-aware readers.

    ``cache['blocks.3.hook_resid_post']`` is ``(B, T, D)``; :meth:`slot` reads a named
    slot out of any residual-stream activation.
    """

    def __init__(self, store: Dict[str, torch.Tensor], model) -> None:
        self._store = store
        self.model = model

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._store:
            raise KeyError(f"no activation {name!r} in the cache; e.g. {next(iter(self._store), None)!r}")
        return self._store[name]

    def __contains__(self, name: str) -> bool:
        return name in self._store

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def keys(self):
        return self._store.keys()

    def items(self):
        return self._store.items()

    @property
    def n_layers(self) -> int:
        return sum(1 for k in self._store if k.startswith("blocks.") and k.endswith(".hook_resid_post"))

    def resid(self, layer: int, where: str = "post") -> torch.Tensor:
        """Residual stream after (``post``), before (``pre``) or in the middle (``mid``) of ``layer``.

        ``layer = -1`` is the last layer; ``resid(0, 'pre')`` is the embedding.
        """
        if layer < 0:
            layer += self.n_layers
        return self[block_hook(layer, f"hook_resid_{where}")]

    def slot(self, name: str, layer: int = -1, where: str = "post") -> torch.Tensor:
        """Slot ``name`` of the residual stream at ``layer``: ``(B, T, size)``."""
        lay = self.model.layout
        if name not in lay:
            raise UnknownSlotError(f"unknown slot {name!r}; slots: {', '.join(s.name for s in lay.slots())}")
        return lay.view(self.resid(layer, where), name)

    def slot_by_layer(self, name: str) -> torch.Tensor:
        """Slot ``name`` after every layer, stacked: ``(n_layers, B, T, size)``."""
        return torch.stack([self.slot(name, l) for l in range(self.n_layers)])
