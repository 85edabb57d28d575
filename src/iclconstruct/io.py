"""Saving and loading compiled circuits (GitHub issue #5).

A saved circuit is a **folder** holding two files:

* ``model.safetensors`` — every weight tensor of the :class:`~iclconstruct.compiler.model.ConstructedTransformer`
  (``model.state_dict()``), written with safetensors (never pickle, never ``torch.load``);
* ``circuit.json`` — what the weights were compiled from: the program (every slot
  allocation and free, every op with its matrices as nested lists, the loops, the readout,
  ``program.meta``), the layout, the approximation constants and the compile arguments
  (``dtype``, ``max_len``, ``block``, ``width``).

:func:`load` trusts neither file alone. It rebuilds the :class:`~iclconstruct.lang.program.Program`
through its public API (so every check the program runs on construction runs again),
recompiles it and requires the recompiled weights to equal the stored ones **bit for bit**;
otherwise it raises :class:`~iclconstruct.errors.CheckpointError`. The weights are thus a
certificate of the program, and the program an explanation of the weights.

Example::

    m = ic.circuits.ridge(d=4, lam=0.5)
    iclconstruct.io.save(m, "runs/ridge")
    m2 = iclconstruct.io.load("runs/ridge")     # identical outputs, input checks re-attached
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .atomic import write_bytes_atomic
from .errors import CheckpointError, ICLConstructError
from .filecheck import check_circuit_doc, check_weights_header, read_json, read_safetensors_header
from .lang.ops import Aff, Div, Mov, Mul, Op, Read

__all__ = ["save", "load", "to_json", "program_to_dict", "program_from_dict", "FORMAT", "FORMAT_VERSION",
           "WEIGHTS_FILE", "CIRCUIT_FILE"]

#: value of the ``format`` field of ``circuit.json``
FORMAT = "iclconstruct.circuit"
#: the only ``format_version`` this module writes and reads
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CIRCUIT_FILE = "circuit.json"
#: key of the weights file's metadata holding the SHA-256 of ``circuit.json``
CIRCUIT_SHA_KEY = "circuit_sha256"

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


# ---------------------------------------------------------------------- number helpers
def _num(x: float):
    """A JSON-safe float: finite floats as numbers (``repr`` round-trips exactly), others as strings."""
    x = float(x)
    return x if math.isfinite(x) else repr(x)  # 'inf', '-inf', 'nan'


def _unnum(x) -> float:
    if isinstance(x, str):
        if x not in ("inf", "-inf", "nan"):
            raise CheckpointError(f"circuit.json: expected a number, got the string {x!r}")
        return float(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise CheckpointError(f"circuit.json: expected a number, got {x!r}")
    return float(x)


def _matrix(a: np.ndarray) -> list:
    return [[_num(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


def _vector(a: Optional[np.ndarray]):
    return None if a is None else [_num(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def _unmatrix(m) -> np.ndarray:
    return np.array([[_unnum(v) for v in row] for row in m], dtype=np.float64)


def _unvector(v) -> Optional[np.ndarray]:
    return None if v is None else np.array([_unnum(x) for x in v], dtype=np.float64)


# ---------------------------------------------------------------------- program <-> dict
def _op_to_dict(op: Op) -> dict:
    if isinstance(op, Mov):
        return {"op": "mov", "src": op.src, "dst": op.dst, "read": {"kind": op.read.kind, "k": op.read.k}}
    if isinstance(op, Mul):
        return {"op": "mul", "lhs": op.lhs, "rhs": op.rhs, "dst": op.dst, "shape": list(op.shape),
                "coef": _num(op.coef), "plus": [[s, _matrix(W)] for s, W in op.plus], "bias": _vector(op.bias)}
    if isinstance(op, Div):
        return {"op": "div", "src": op.src, "divisor": op.divisor, "dst": op.dst, "coef": _num(op.coef),
                "accumulate": bool(op.accumulate)}
    if isinstance(op, Aff):
        return {"op": "aff", "dst": op.dst, "terms": [[s, _matrix(W)] for s, W in op.terms], "bias": _vector(op.bias)}
    raise CheckpointError(f"cannot save op {op!r}: only mov, mul, div and aff ops are serialisable")


def _slot_dict(s) -> dict:
    return {"name": s.name, "start": s.start, "size": s.size, "bound": _num(s.bound)}


def program_to_dict(program) -> dict:
    """JSON-able description of ``program`` from which :func:`program_from_dict` rebuilds it.

    Slots are listed in allocation order with their first row, and every freed slot with
    the point where it was freed (``free_after``: the number of ops added before the free;
    derived as the latest point allowed, i.e. after the last op that touches the slot and
    before the first slot that reuses its rows).
    """
    from .lang.layout import INPUT_SLOTS, SYSTEM_SLOTS

    lay = program.layout
    segments = [{"loop": i % 2 == 1, "repeat": seg.repeat, "ops": [_op_to_dict(op) for op in seg.ops]}
                for i, seg in enumerate(program.segments)]
    user = [s for s in lay.slots() if s.name not in SYSTEM_SLOTS and s.name not in INPUT_SLOTS]
    try:
        meta = json.loads(json.dumps(program.meta, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"program.meta must be JSON-serialisable (numbers, strings, lists, dicts) to be saved: {exc}; "
            f"convert arrays with .tolist()"
        ) from exc
    return {
        "name": program.name,
        "d": program.d,
        "x_bound": _num(lay["x"].bound),
        "y_bound": _num(lay["y"].bound),
        "width": lay.width,
        "slots": [dict(_slot_dict(s), live=lay.is_live(s.name)) for s in user],
        "segments": segments,
        "readout": {"slot": program.readout_slot, "columns": program.readout_columns},
        "meta": meta,
    }


def _ops_touching(op_dict: dict) -> List[str]:
    keys = ("src", "dst", "lhs", "rhs", "divisor")
    names = [op_dict[k] for k in keys if k in op_dict]
    names += [s for s, _ in op_dict.get("plus", [])] + [s for s, _ in op_dict.get("terms", [])]
    return names


def _add_op(p, o: dict) -> None:
    kind = o.get("op")
    if kind == "mov":
        r = o["read"]
        if r["kind"] == "offset":
            p.mov(o["src"], o["dst"], offset=int(r["k"]))
        elif r["kind"] == "position":
            p.mov(o["src"], o["dst"], position=int(r["k"]))
        elif r["kind"] == "mean":
            p.mov(o["src"], o["dst"], mean=Read.MEAN_SETS[int(r["k"])])
        else:
            raise CheckpointError(f"circuit.json: unknown mov read kind {r['kind']!r}")
    elif kind == "mul":
        p.mul(o["lhs"], o["rhs"], o["dst"], shape=tuple(int(v) for v in o["shape"]), coef=_unnum(o["coef"]),
              plus=[(s, _unmatrix(W)) for s, W in o["plus"]], bias=_unvector(o["bias"]))
    elif kind == "div":
        p.div(o["src"], o["divisor"], o["dst"], coef=_unnum(o["coef"]), accumulate=bool(o["accumulate"]))
    elif kind == "aff":
        p.aff(o["dst"], [(s, _unmatrix(W)) for s, W in o["terms"]], bias=_unvector(o["bias"]))
    else:
        raise CheckpointError(f"circuit.json: unknown op {kind!r}; expected mov, mul, div or aff")


def program_from_dict(data: dict):
    """Rebuild a :class:`~iclconstruct.lang.program.Program` from :func:`program_to_dict` output.

    The program is replayed through its public API (``slot``, ``free``, ``loop`` and the four
    primitives), so every construction-time check runs again. Slot allocations and frees
    are interleaved with the ops at the earliest point the layout allows: a freed slot is
    freed after the last op that touches it (after the whole loop, if that op is inside
    one), just before the first later slot that reuses its rows.
    """
    from .lang.program import Program

    p = Program(int(data["d"]), x_bound=_unnum(data["x_bound"]), y_bound=_unnum(data["y_bound"]),
                width=data["width"], name=str(data["name"]))
    segs = data["segments"]
    if not segs or segs[0]["loop"] or any(bool(s["loop"]) != (i % 2 == 1) for i, s in enumerate(segs)):
        raise CheckpointError("circuit.json: program segments must alternate straight code and loops")
    flat: List[Tuple[int, dict]] = [(si, o) for si, seg in enumerate(segs) for o in seg["ops"]]
    seg_end = {si: i for i, (si, _) in enumerate(flat)}
    last_use: Dict[str, int] = {}
    for i, (_, o) in enumerate(flat):
        for n in _ops_touching(o):
            last_use[n] = i

    def after(i: int) -> int:
        """First point after op ``i`` that is outside any loop body."""
        if i < 0:
            return 0
        si = flat[i][0]
        return (seg_end[si] if segs[si]["loop"] else i) + 1

    # actions[k]: slot allocations / frees to run just before op k (k = len(flat): at the end)
    actions: Dict[int, list] = {}
    point, freed_done, allocated = 0, set(), []
    for s in data["slots"]:
        start, size = int(s["start"]), int(s["size"])
        frees = [f for f in allocated if not f["live"] and f["name"] not in freed_done
                 and int(f["start"]) < start + size and start < int(f["start"]) + int(f["size"])]
        for f in frees:
            point = max(point, after(last_use.get(f["name"], -1)))
        acts = actions.setdefault(point, [])
        for f in frees:
            acts.append(("free", f))
            freed_done.add(f["name"])
        acts.append(("slot", s))
        allocated.append(s)
    end = actions.setdefault(len(flat), [])
    end += [("free", f) for f in allocated if not f["live"] and f["name"] not in freed_done]

    cur, open_loop = 0, None
    for k in range(len(flat) + 1):
        si = flat[k][0] if k < len(flat) else len(segs)
        if open_loop is not None and si != cur:
            open_loop.__exit__(None, None, None)
            open_loop = None
        for what, s in actions.get(k, []):
            if what == "free":
                p.free(s["name"])
            else:
                p.slot(s["name"], int(s["size"]), bound=_unnum(s["bound"]), at=int(s["start"]))
        if k == len(flat):
            for sj in range(cur + 1, len(segs)):  # trailing empty loops keep the structure
                if segs[sj]["loop"]:
                    with p.loop(segs[sj]["repeat"]):
                        pass
            break
        for sj in range(cur + 1, si + 1):
            if segs[sj]["loop"] and sj < si:  # an empty loop body
                with p.loop(segs[sj]["repeat"]):
                    pass
            elif segs[sj]["loop"]:
                open_loop = p.loop(segs[sj]["repeat"])
                open_loop.__enter__()
        cur = si
        _add_op(p, flat[k][1])
    ro = data["readout"]
    if ro["slot"] is not None:
        p.readout(ro["slot"], columns=ro["columns"])
    p.meta = data.get("meta", {}) or {}
    return p


# ---------------------------------------------------------------------- whole circuit
def _folder(path) -> Path:
    p = Path(path)
    if p.name in (WEIGHTS_FILE, CIRCUIT_FILE):
        p = p.parent
    return p


def to_json(model) -> dict:
    """Everything :func:`load` needs besides the weights, as a JSON-able dict."""
    from . import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "program": program_to_dict(model.program),
        "layout": _layout_dict(model.layout),
        "constants": {k: (None if v is None else _num(v)) for k, v in model.constants.to_dict().items()},
        "compile": {"dtype": str(model.dtype).replace("torch.", ""), "max_len": int(model.max_len),
                    "block": model.block_style, "width": int(model.d_model)},
        "weights": {"file": WEIGHTS_FILE, "tensors": sorted(model.state_dict())},
    }


def _layout_dict(lay) -> dict:
    d = lay.to_dict()
    d["slots"] = [dict(s, bound=_num(s["bound"])) for s in d["slots"]]
    d["row_labels"] = lay.row_labels()
    return d


def _tensors(model) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}




def save(model, path) -> Path:
    """Save ``model`` (a :class:`~iclconstruct.compiler.model.ConstructedTransformer`) into the folder ``path``.

    Writes ``path/model.safetensors`` (the weights) and then ``path/circuit.json`` (program,
    layout, constants, compile arguments, meta); ``circuit.json`` is written last, so a
    folder with both files is complete. Returns the folder. Raises
    :class:`~iclconstruct.errors.CheckpointError` if ``program.meta`` is not JSON-serialisable.
    """
    try:
        from safetensors.torch import save as save_bytes
    except ImportError as exc:  # pragma: no cover
        raise ImportError("saving circuits needs safetensors: pip install 'iclconstruct[icl]'") from exc
    folder = _folder(path)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} exists and is not a folder; save a circuit into a folder path")
    doc = to_json(model)  # fails early (meta) before anything is written
    text = json.dumps(doc, indent=1, allow_nan=False)
    folder.mkdir(parents=True, exist_ok=True)
    # the SHA-256 of circuit.json binds the fields the weights do not determine (readout,
    # loop repeats, ln_eps, div_min, meta) to this weights file
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            CIRCUIT_SHA_KEY: hashlib.sha256(text.encode("utf-8")).hexdigest()}
    write_bytes_atomic(folder / WEIGHTS_FILE, save_bytes(_tensors(model), metadata=meta))
    write_bytes_atomic(folder / CIRCUIT_FILE, text.encode("utf-8"))
    return folder


def _read_json(folder: Path) -> dict:
    f = folder / CIRCUIT_FILE
    if not f.is_file():
        raise CheckpointError(f"no {CIRCUIT_FILE} in {folder}: not a saved circuit (save one with iclconstruct.io.save)")
    doc = read_json(f)  # bounded size and depth, finite numbers only
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{f} is not an iclconstruct circuit file (format field {doc.get('format') if isinstance(doc, dict) else None!r})")
    v = doc.get("format_version")
    if v != FORMAT_VERSION:
        raise CheckpointError(
            f"{f} has format_version {v!r}, but this iclconstruct reads version {FORMAT_VERSION}; "
            f"load it with the iclconstruct version that wrote it ({doc.get('library_version', 'unknown')!r:.40})"
        )
    check_circuit_doc(doc, str(f))  # every field and size, before anything is allocated
    return doc


def _read_weights(folder: Path) -> Dict[str, torch.Tensor]:
    f = folder / WEIGHTS_FILE
    if not f.is_file():
        raise CheckpointError(f"no {WEIGHTS_FILE} in {folder}: the weights are missing — save the circuit again")
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover
        raise ImportError("loading circuits needs safetensors: pip install 'iclconstruct[icl]'") from exc
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{f} is not a readable safetensors file ({exc}); the file is corrupted") from exc


def _rebuild(doc: dict, where: Path):
    """Program, constants and compile arguments from ``circuit.json``; the recompiled model."""
    from .compiler.build import compile
    from .numerics.constants import Constants

    try:
        program = program_from_dict(doc["program"])
        consts = {k: (None if v is None else _unnum(v)) for k, v in doc["constants"].items()}
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
    if _layout_dict(model.layout) != doc.get("layout"):
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
    stored ``model.safetensors`` bit for bit; the circuit's input checks (e.g. the SGD
    stability check) are re-attached with :func:`iclconstruct.circuits.attach_checks`.

    Raises :class:`~iclconstruct.errors.CheckpointError` when a file is missing or corrupt,
    the format version is unknown, or the program and the weights disagree.
    """
    from .circuits import attach_checks

    folder = _folder(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; pass the folder a circuit was saved into")
    doc = _read_json(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"no {WEIGHTS_FILE} in {folder}: the weights are missing — save the circuit again")
    header = read_safetensors_header(folder / WEIGHTS_FILE)
    check_weights_header(header, doc, str(folder))  # sizes agree before the recompilation allocates
    stored = _read_weights(folder)
    model = _rebuild(doc, folder / CIRCUIT_FILE)
    fresh = _tensors(model)
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
            f"file): a field the weights do not determine (readout, loop repeat, ln_eps, div_min, meta) may have "
            f"been edited — save the circuit again from the original model")
    try:
        attach_checks(model)
    except (KeyError, TypeError, ValueError, ICLConstructError) as exc:
        raise CheckpointError(f"{folder}: program.meta of {CIRCUIT_FILE} is invalid ({exc})") from None
    return model
