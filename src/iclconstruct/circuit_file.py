"""The saved-circuit folder: its file names, its ``circuit.json`` document, and writing it.

A saved circuit is a **folder** holding two files:

* ``model.safetensors`` — every weight tensor of the
  :class:`~iclconstruct.compiler.model.ConstructedTransformer` (``model.state_dict()``),
  written with safetensors (never pickle, never ``torch.load``);
* ``circuit.json`` — what the weights were compiled from: the program (its event log:
  every slot allocation and free, every op with its matrices as nested lists, the loops,
  the input guards, the readout; and ``program.meta``), the layout, the approximation
  constants, the compile arguments (``dtype``, ``max_len``, ``block``, ``width``) and the
  resulting architecture (``config``).

Reading and verifying a folder (which needs the compiler) is :func:`iclconstruct.io.load`;
this module only writes, so that a model can save itself without importing the compiler.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict

import torch

from ._version import __version__
from .errors import CheckpointError
from .files import atomic_write_bytes, save_tensors
from .lang.serialize import num, program_to_dict

__all__ = ["save", "to_json", "layout_dict", "folder_of", "FORMAT", "FORMAT_VERSION", "READABLE_VERSIONS",
           "WEIGHTS_FILE", "CIRCUIT_FILE"]

#: value of the ``format`` field of ``circuit.json``
FORMAT = "iclconstruct.circuit"
#: the ``format_version`` this module writes (2: the program as an event log)
FORMAT_VERSION = 2
#: versions :func:`iclconstruct.io.load` reads (1: the program as slots + segments)
READABLE_VERSIONS = (1, 2)
WEIGHTS_FILE = "model.safetensors"
CIRCUIT_FILE = "circuit.json"
#: key of the weights file's metadata holding the SHA-256 of ``circuit.json``
CIRCUIT_SHA_KEY = "circuit_sha256"
#: ``save`` writes dense weights; a sparse model whose dense weights exceed this many bytes is refused
MAX_DENSE_BYTES = 4 << 30


def folder_of(path) -> Path:
    """The circuit folder named by ``path`` (the folder itself or either file in it)."""
    p = Path(path)
    return p.parent if p.name in (WEIGHTS_FILE, CIRCUIT_FILE) else p


def layout_dict(lay) -> dict:
    """The layout as recorded in ``circuit.json`` (slots and one label per row)."""
    d = lay.to_dict()
    d["slots"] = [dict(s, bound=num(s["bound"])) for s in d["slots"]]
    d["row_labels"] = lay.row_labels()
    return d


def tensors(model) -> Dict[str, torch.Tensor]:
    """The model's weights as contiguous CPU tensors, by ``state_dict`` name."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def to_json(model) -> dict:
    """Everything :func:`iclconstruct.io.load` needs besides the weights, as a JSON-able dict."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "program": program_to_dict(model.program),
        "layout": layout_dict(model.layout),
        "constants": {k: (None if v is None else v if k == "activation" else num(v))
                      for k, v in model.constants.to_dict().items()},
        "compile": {"dtype": str(model.dtype).replace("torch.", ""), "max_len": int(model.max_len),
                    "block": model.block_style, "width": int(model.d_model)},
        "config": model.cfg.to_dict(),
        "weights": {"file": WEIGHTS_FILE, "tensors": sorted(model.state_dict())},
    }


def dense_bytes(model) -> int:
    """Bytes of ``model``'s dense weights (what :func:`save` writes), from its shapes (nothing is built)."""
    c = model.cfg
    per_block = 4 * c.n_heads * c.d_model * c.d_head + 2 * c.d_model * c.d_mlp + c.d_mlp + c.d_model
    if c.block == "pre_ln":
        per_block += 2 * c.n_heads * c.d_head + c.d_model
    n = model.W_E.numel() + model.W_pos.numel() + len(model.blocks) * per_block
    return n * model.W_E.element_size()


def save(model, path, *, max_dense_bytes: int = MAX_DENSE_BYTES) -> Path:
    """Save ``model`` (a :class:`~iclconstruct.compiler.model.ConstructedTransformer`) into the folder ``path``.

    Writes ``path/model.safetensors`` (the weights) and then ``path/circuit.json`` (program,
    layout, constants, compile arguments, meta), each atomically; ``circuit.json`` is
    written last, so a folder with both files is complete. Returns the folder. Raises
    :class:`~iclconstruct.errors.CheckpointError` if ``program.meta`` is not JSON-serialisable.

    A sparse model (``compile(..., sparse=True)``) is saved as its dense weights (``to_dense()``,
    bit for bit); above ``max_dense_bytes`` of dense weights it raises
    :class:`~iclconstruct.errors.CheckpointError` (naming ``max_dense_bytes``) before allocating them.
    """
    folder = folder_of(path)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} exists and is not a folder; save a circuit into a folder path")
    if model.is_sparse:  # the file holds the dense weights (load recompiles densely and compares)
        need = dense_bytes(model)
        if need > max_dense_bytes:
            raise CheckpointError(
                f"save: this sparse model's dense weights take {need / 2**30:.1f} GiB, more than "
                f"max_dense_bytes={max_dense_bytes} ({max_dense_bytes / 2**30:.1f} GiB); a saved circuit stores "
                f"dense weights, so pass a larger max_dense_bytes if this machine has the memory, or keep the "
                f"program (iclconstruct.io.program_to_dict) and compile it again with sparse=True")
        model = model.to_dense()
    doc = to_json(model)  # fails early (meta) before anything is written
    text = json.dumps(doc, indent=1, allow_nan=False)
    folder.mkdir(parents=True, exist_ok=True)
    # the SHA-256 of circuit.json binds the fields the weights do not determine (readout, loop
    # repeats, guards, ln_eps, div_min, meta) to this weights file; load() requires it
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    save_tensors(folder / WEIGHTS_FILE, tensors(model),
                 {"format": FORMAT, "format_version": str(FORMAT_VERSION), CIRCUIT_SHA_KEY: sha})
    atomic_write_bytes(folder / CIRCUIT_FILE, text.encode("utf-8"))
    return folder
