"""Corrupting saved files on purpose: the mutations the file fuzz tests apply (class 5 and 6).

A *mutation* changes one saved file in place: flip one byte, truncate, or replace one field
of ``circuit.json`` with a hostile value (a huge or negative integer, ``1e400``, a string,
``null``, a deep list …). :func:`load_outcome` then loads the folder and classifies what
happened: ``'refused'`` (a library error), ``'identical'`` (it loaded, and the model equals
the saved one — e.g. a flipped byte in the header's padding), ``'silent'`` (it loaded
something different) or ``'crash'`` (any other exception). A loader is correct when only
the first two ever happen. Used by ``tests/test_file_fuzz.py`` and ``bench/misuse_table.py``.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable, List, Tuple

import torch

from .errors import ICLConstructError

__all__ = ["flip_byte", "truncate", "edit_field", "hostile_values", "json_leaves", "load_outcome"]


def hostile_values() -> list:
    """Values a crafted ``circuit.json`` field may hold."""
    return [None, True, -1, 0, 10**9, 10**12, 2.5, -1e-300, "x", "inf", [], {}, [[[[1]]]], [1] * 5,
            {"a": 1}, "examples", 1e300]


def flip_byte(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    i = rng.randrange(len(data))
    data[i] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"flip byte {i} of {path.name}"


def truncate(path: Path, rng: random.Random) -> str:
    data = path.read_bytes()
    n = rng.randrange(len(data))
    path.write_bytes(data[:n])
    return f"truncate {path.name} to {n} bytes"


def json_leaves(doc, prefix=()) -> List[Tuple]:
    """Paths to every value of a JSON document (dict keys and list indices)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += json_leaves(v, prefix + (k,))
    elif isinstance(doc, list) and len(doc) <= 64:  # skip the entries of long matrices
        for i, v in enumerate(doc):
            out += json_leaves(v, prefix + (i,))
    return out


def edit_field(path: Path, rng: random.Random) -> str:
    doc = json.loads(path.read_text())
    leaves = [p for p in json_leaves(doc) if p]
    where = rng.choice(leaves)
    value = rng.choice(hostile_values())
    node = doc
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    path.write_text(json.dumps(doc))
    return f"set {'.'.join(map(str, where))} = {value!r:.40}"


def load_outcome(folder: Path, original, loader: Callable) -> Tuple[str, str]:
    """Load ``folder`` with ``loader`` and compare with ``original`` (a model)."""
    try:
        m = loader(folder)
    except ICLConstructError as exc:
        return "refused", f"{type(exc).__name__}: {str(exc)[:200]}"
    except Exception as exc:  # noqa: BLE001 - the classification is the point
        return "crash", f"{type(exc).__name__}: {str(exc)[:300]}"
    a, b = original.state_dict(), m.state_dict()
    same = sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    prog_a, prog_b = getattr(original, "program", None), getattr(m, "program", None)
    if prog_a is not None:
        same = same and prog_a.listing() == prog_b.listing() and prog_a.meta == prog_b.meta \
            and (prog_a.readout_slot, prog_a.readout_columns) == (prog_b.readout_slot, prog_b.readout_columns) \
            and original.constants == m.constants and original.max_len == m.max_len \
            and [s.repeat for s in prog_a.segments] == [s.repeat for s in prog_b.segments] \
            and list(prog_a.guards) == list(prog_b.guards)
    return ("identical", "") if same else ("silent", "loaded a different model")
