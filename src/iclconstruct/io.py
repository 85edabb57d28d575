"""Saving and loading compiled circuits.

A saved circuit is a folder with ``model.safetensors`` (the weights) and ``circuit.json``
(what they were compiled from); :mod:`iclconstruct.circuit_file` describes the format and
writes it (:func:`save`).

:func:`load` trusts neither file alone. It rebuilds the :class:`~iclconstruct.lang.program.Program`
by replaying its event log through the public API (so every check the program runs on
construction runs again), recompiles it and requires the recompiled weights to equal the
stored ones **bit for bit**; otherwise it raises :class:`~iclconstruct.errors.CheckpointError`.
The weights are thus a certificate of the program, and the program an explanation of the
weights. The program's input guards (e.g. the SGD stability guard) are part of it, so a
loaded model refuses exactly the inputs the saved one refused.

Example::

    m = ic.circuits.ridge(d=4, lam=0.5)
    iclconstruct.io.save(m, "runs/ridge")
    m2 = iclconstruct.io.load("runs/ridge")     # identical outputs and input checks
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict

import torch

from .circuit_file import (CIRCUIT_FILE, CIRCUIT_SHA_KEY, FORMAT, FORMAT_VERSION, READABLE_VERSIONS, WEIGHTS_FILE,
                           folder_of, layout_dict, save, tensors, to_json)
from .compiler.build import compile
from .errors import CheckpointError, ICLConstructError
from .filecheck import check_circuit_doc, check_weights_header, read_json, read_safetensors_header
from .files import read_tensors
from .lang.serialize import program_from_dict, program_to_dict, unnum
from .numerics.constants import Constants

__all__ = ["save", "load", "to_json", "program_to_dict", "program_from_dict", "FORMAT", "FORMAT_VERSION",
           "WEIGHTS_FILE", "CIRCUIT_FILE"]

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _read_json(folder: Path) -> dict:
    f = folder / CIRCUIT_FILE
    if not f.is_file():
        raise CheckpointError(f"no {CIRCUIT_FILE} in {folder}: not a saved circuit (save one with iclconstruct.io.save)")
    doc = read_json(f)  # bounded size and depth, finite numbers only
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{f} is not an iclconstruct circuit file (format field {doc.get('format') if isinstance(doc, dict) else None!r})")
    v = doc.get("format_version")
    if v not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{f} has format_version {v!r}, but this iclconstruct reads versions {', '.join(map(str, READABLE_VERSIONS))}; "
            f"load it with the iclconstruct version that wrote it ({str(doc.get('library_version', 'unknown'))[:40]})"
        )
    check_circuit_doc(doc, str(f))  # every field and size, before anything is allocated
    return doc


def _read_weights(folder: Path) -> Dict[str, torch.Tensor]:
    f = folder / WEIGHTS_FILE
    if not f.is_file():
        raise CheckpointError(f"no {WEIGHTS_FILE} in {folder}: the weights are missing — save the circuit again")
    return read_tensors(f)[0]


def _rebuild(doc: dict, where: Path):
    """Program, constants and compile arguments from ``circuit.json``; the recompiled model."""
    try:
        program = program_from_dict(doc["program"])
        consts = {k: (None if v is None else unnum(v)) for k, v in doc["constants"].items()}
        constants = Constants(**consts)
        c = doc["compile"]
        if c["dtype"] not in _DTYPES:
            raise CheckpointError(f"unknown dtype {c['dtype']!r}; expected one of {sorted(_DTYPES)}")
        model = compile(program, constants=constants, dtype=_DTYPES[c["dtype"]], max_len=int(c["max_len"]),
                        block=c["block"], width=int(c["width"]))
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    except (ICLConstructError, KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError,
            RecursionError) as exc:
        raise CheckpointError(
            f"{where}: the program in {CIRCUIT_FILE} cannot be rebuilt and compiled "
            f"({type(exc).__name__}: {exc}); the file is corrupted or was edited by hand"
        ) from exc
    if "config" in doc and model.cfg.to_dict() != doc["config"]:
        raise CheckpointError(
            f"{where}: the architecture recorded in {CIRCUIT_FILE} (config) differs from the one its program "
            f"compiles to; the file was edited — save the circuit again"
        )
    if layout_dict(model.layout) != doc.get("layout"):
        raise CheckpointError(
            f"{where}: the layout recorded in {CIRCUIT_FILE} differs from the layout its program builds; "
            f"the file was edited — save the circuit again"
        )
    return model


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.numpy().tobytes() == b.numpy().tobytes()


def load(path):
    """Load a circuit saved by :func:`save`: rebuild its program, recompile, verify, return the model.

    ``path`` is the folder (or either file in it). The recompiled weights must equal the
    stored ``model.safetensors`` bit for bit. Input guards come back with the program.

    Raises :class:`~iclconstruct.errors.CheckpointError` when a file is missing or corrupt,
    the format version is unknown, or the program and the weights disagree.
    """
    folder = folder_of(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; pass the folder a circuit was saved into")
    doc = _read_json(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"no {WEIGHTS_FILE} in {folder}: the weights are missing — save the circuit again")
    header = read_safetensors_header(folder / WEIGHTS_FILE)
    check_weights_header(header, doc, str(folder))  # sizes agree before the recompilation allocates
    stored = _read_weights(folder)
    model = _rebuild(doc, folder / CIRCUIT_FILE)
    fresh = tensors(model)
    if sorted(stored) != sorted(fresh):
        missing = sorted(set(fresh) - set(stored))
        extra = sorted(set(stored) - set(fresh))
        raise CheckpointError(
            f"{folder}: the program and the weights disagree: the weights file lacks {missing[:5]} and has "
            f"unexpected {extra[:5]}; the files do not belong together"
        )
    bad = [k for k in sorted(fresh) if not _same_bits(fresh[k], stored[k])]
    if bad:
        k = bad[0]
        detail = "dtype/shape differ"
        if fresh[k].shape == stored[k].shape and fresh[k].dtype == stored[k].dtype:
            diff = (fresh[k].double() - stored[k].double()).abs()
            detail = f"{int((diff != 0).sum())} entries differ, max |diff| {float(diff.max()):.3g}"
        raise CheckpointError(
            f"{folder}: the program and the weights disagree: recompiling {CIRCUIT_FILE} does not reproduce "
            f"{WEIGHTS_FILE} bit for bit ({len(bad)} tensor(s), first {k!r}: {detail}); one of the files was "
            f"modified — save the circuit again from the original model"
        )
    meta = header.get("__metadata__") or {}
    digest = hashlib.sha256((folder / CIRCUIT_FILE).read_bytes()).hexdigest()
    if meta.get(CIRCUIT_SHA_KEY) != digest:
        raise CheckpointError(
            f"{folder}: {CIRCUIT_FILE} is not the file saved with {WEIGHTS_FILE} (its SHA-256 "
            f"{'is missing from' if CIRCUIT_SHA_KEY not in meta else 'differs from the one recorded in'} the weights "
            f"file): a field the weights do not determine (readout, loop repeat, ln_eps, div_min, guards, meta) may "
            f"have been edited — save the circuit again from the original model")
    return model
