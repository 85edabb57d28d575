"""Field-by-field and size-by-size validation of saved circuits, before anything is allocated.

:func:`iclconstruct.io.load` rebuilds a program from ``circuit.json`` and recompiles it; a
crafted file could make that step allocate without bound (``"max_len": 1e12``, a slot of
10⁹ rows), recurse without bound (deeply nested lists) or escape as a non-library
exception (``"d": 1e400``). The helpers here read and check everything first:

* :func:`read_json` — size-limited read; NaN/Infinity literals, numbers that overflow to
  infinity and nesting deeper than :data:`MAX_DEPTH` are refused;
* :func:`check_circuit_doc` — every field of the document has the type and range
  :func:`iclconstruct.io.save` writes (version 1);
* :func:`read_safetensors_header` and :func:`check_weights_header` — the weight file's
  header (tensor names, dtypes, shapes) must agree with the document *before* the program
  is recompiled, so the compile step can never allocate more than the stored file holds
  (up to the per-layer ``D × D`` work matrices, bounded by :data:`MEM_BUDGET`).

Every failure is a :class:`~iclconstruct.errors.CheckpointError` naming the file and field.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Dict

from .errors import CheckpointError
from .numerics.constants import ACTIVATIONS
from .lang.validate import MAX_D, MAX_LEN_LIMIT, MAX_ROWS
from .numerics.constants import Constants

__all__ = ["read_json", "check_circuit_doc", "read_safetensors_header", "check_weights_header", "MAX_JSON_BYTES",
           "MAX_DEPTH", "MEM_BUDGET"]

#: largest ``circuit.json`` accepted
MAX_JSON_BYTES = 256 << 20
#: deepest nesting of lists/dicts accepted (a saved circuit nests about 8 deep)
MAX_DEPTH = 64
#: bytes the recompilation may allocate for its work matrices (float64)
MEM_BUDGET = 4 << 30
#: largest safetensors header accepted
MAX_HEADER_BYTES = 64 << 20
#: most times a fixed-count loop may repeat
MAX_REPEAT = 1 << 16

#: the fields of each op kind as :mod:`iclconstruct.lang.serialize` writes them
_OP_FIELDS = {"mov": ["src", "dst", "read"], "mul": ["lhs", "rhs", "dst", "shape", "coef", "plus", "bias"],
              "div": ["src", "divisor", "dst", "coef", "accumulate"], "aff": ["dst", "terms", "bias"],
              "count": ["dst"], "sum": ["src", "dst"]}
_CONSTANT_FIELDS = tuple(f.name for f in dataclasses.fields(Constants))  # one source: the dataclass
#: fields that files written before they existed may lack (the default applies)
_OPTIONAL_CONSTANTS = ("product_order", "pre_ln_anchor", "activation")


def _bad(where: str, msg: str) -> CheckpointError:
    return CheckpointError(f"{where}: {msg}; the file is corrupted or was edited — save the circuit again")


def _depth_ok(text: str) -> bool:
    depth = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def read_json(path: Path) -> Any:
    """Parse ``path`` as strict JSON: bounded size and depth, finite numbers only."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({exc})") from None
    if size > MAX_JSON_BYTES:
        raise _bad(str(path), f"{size} bytes, more than the {MAX_JSON_BYTES} a saved circuit may have")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the file is corrupted — save the circuit again") from None
    if not _depth_ok(text):
        raise _bad(str(path), f"lists/objects nested deeper than {MAX_DEPTH}")

    def no_constant(name):
        raise ValueError(f"the literal {name} is not JSON")

    def finite_float(s):
        v = float(s)
        if not math.isfinite(v):
            raise ValueError(f"the number {s[:40]} overflows a float")
        return v

    try:
        return json.loads(text, parse_constant=no_constant, parse_float=finite_float)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; huge ints raise ValueError
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the file is corrupted — save the circuit again") from None


# ---------------------------------------------------------------------- typed field readers
def _dict(v, where, keys=None):
    if not isinstance(v, dict):
        raise _bad(where, f"expected an object, got {type(v).__name__}")
    if keys is not None:
        missing = [k for k in keys if k not in v]
        if missing:
            raise _bad(where, f"missing field(s) {missing}")
    return v


def _list(v, where, max_len=None):
    if not isinstance(v, list):
        raise _bad(where, f"expected a list, got {type(v).__name__}")
    if max_len is not None and len(v) > max_len:
        raise _bad(where, f"{len(v)} entries, more than {max_len}")
    return v


def _str(v, where, choices=None, max_len=1000):
    if not isinstance(v, str) or len(v) > max_len:
        raise _bad(where, f"expected a string, got {type(v).__name__}")
    if choices is not None and v not in choices:
        raise _bad(where, f"{v!r} is not one of {list(choices)}")
    return v


def _int(v, where, lo, hi):
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(where, f"expected an integer, got {v!r}"[:200])
    if not lo <= v <= hi:
        raise _bad(where, f"{v} is outside [{lo}, {hi}]")
    return v


def _num(v, where, *, positive=False, allow_inf=False):
    if isinstance(v, str) and allow_inf and v == "inf":
        return math.inf
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(where, f"expected a number, got {v!r}"[:200])
    v = float(v)
    if not math.isfinite(v) or (positive and not v > 0):
        raise _bad(where, f"expected a {'positive ' if positive else ''}finite number, got {v!r}")
    return v


def _matrix(v, where, rows, cols):
    _list(v, where, rows)
    if len(v) != rows:
        raise _bad(where, f"{len(v)} rows, expected {rows}")
    for i, r in enumerate(v):
        _list(r, f"{where}[{i}]", cols)
        if len(r) != cols:
            raise _bad(f"{where}[{i}]", f"{len(r)} columns, expected {cols}")
        for x in r:
            _num(x, f"{where}[{i}]")


def _vector(v, where, n):
    if v is None:
        return
    _list(v, where, n)
    if len(v) != n:
        raise _bad(where, f"{len(v)} entries, expected {n}")
    for x in v:
        _num(x, where)


# ---------------------------------------------------------------------- the document
def check_circuit_doc(doc: Any, where: str) -> None:
    """Check every field of a version-1 ``circuit.json`` document (types, ranges, sizes, memory)."""
    _dict(doc, where, ["format", "format_version", "program", "layout", "constants", "compile", "weights"])
    _str(doc.get("library_version", ""), f"{where}: library_version")
    v2 = isinstance(doc["program"], dict) and "events" in doc["program"]
    p = _dict(doc["program"], f"{where}: program", ["name", "d", "x_bound", "y_bound", "width", "segments"]
              + ([] if v2 else ["slots", "readout"]))
    _str(p["name"], f"{where}: program.name")
    d = _int(p["d"], f"{where}: program.d", 1, MAX_D)
    _num(p["x_bound"], f"{where}: program.x_bound", positive=True)
    _num(p["y_bound"], f"{where}: program.y_bound", positive=True)
    c = _dict(doc["compile"], f"{where}: compile", ["dtype", "max_len", "block", "width"])
    _str(c["dtype"], f"{where}: compile.dtype", ("float64", "float32"))
    max_len = _int(c["max_len"], f"{where}: compile.max_len", 2, MAX_LEN_LIMIT)
    from .compiler.build import BLOCK_STYLES

    _str(c["block"], f"{where}: compile.block", BLOCK_STYLES)
    width = _int(c["width"], f"{where}: compile.width", 1, MAX_ROWS)
    if p["width"] is not None:  # a cap on the program's allocation; the model needs only the rows in use
        _int(p["width"], f"{where}: program.width", 1, MAX_ROWS)
    sizes: Dict[str, int] = {"y": 1, "x": d, "pos": 2, "one": 1, "is_y": 1}
    names = set(sizes) | {"anchor", "pair", "bal"}
    readouts = []
    if v2:
        for i, ev in enumerate(_list(p["events"], f"{where}: program.events", 1 << 22)):
            w = f"{where}: program.events[{i}]"
            _list(ev, w, 5)
            kind = _str(ev[0] if ev else None, f"{w}[0]", ("slot", "free", "loop", "end", "op", "guard", "readout"))
            n_args = {"slot": 5, "free": 2, "loop": 2, "end": 1, "op": 1, "guard": 2, "readout": 3}[kind]
            if len(ev) != n_args:
                raise _bad(w, f"a {kind!r} event has {n_args} entries, got {len(ev)}")
            if kind == "slot":
                name = _str(ev[1], f"{w}[1]", max_len=200)
                if name in names:
                    raise _bad(f"{w}[1]", f"slot {name!r} is allocated twice")
                names.add(name)
                start = _int(ev[4], f"{w}[4]", 0, width - 1)
                sizes[name] = _int(ev[2], f"{w}[2]", 1, width - start)
                _num(ev[3], f"{w}[3]", positive=True)
            elif kind == "free":
                _str(ev[1], f"{w}[1]", max_len=200)
            elif kind == "loop" and ev[1] != "examples":
                _int(ev[1], f"{w}[1]", 1, MAX_REPEAT)
            elif kind == "guard":
                _dict(ev[1], f"{w}[1]")
                for k, v in ev[1].items():
                    if not isinstance(v, (str, int, float, bool)) and v is not None:
                        raise _bad(f"{w}[1].{k}", f"expected a plain value, got {type(v).__name__}")
            elif kind == "readout":
                readouts.append((ev[1], ev[2], w))
    else:
        for i, s in enumerate(_list(p["slots"], f"{where}: program.slots", MAX_ROWS)):
            w = f"{where}: program.slots[{i}]"
            _dict(s, w, ["name", "start", "size", "bound", "live"])
            name = _str(s["name"], f"{w}.name", max_len=200)
            if name in names:
                raise _bad(f"{w}.name", f"slot {name!r} appears twice")
            names.add(name)
            start = _int(s["start"], f"{w}.start", 0, width - 1)
            sizes[name] = _int(s["size"], f"{w}.size", 1, width - start)
            _num(s["bound"], f"{w}.bound", positive=True)
            if not isinstance(s["live"], bool):
                raise _bad(f"{w}.live", "expected true or false")
        ro = _dict(p["readout"], f"{where}: program.readout", ["slot", "columns"])
        if ro["slot"] is not None:
            readouts.append((ro["slot"], ro["columns"], f"{where}: program.readout"))
    segs = _list(p["segments"], f"{where}: program.segments", 1 << 20)
    n_ops = 0
    for si, seg in enumerate(segs):
        w = f"{where}: program.segments[{si}]"
        _dict(seg, w, ["loop", "repeat", "ops"])
        if not isinstance(seg["loop"], bool):
            raise _bad(f"{w}.loop", "expected true or false")
        rep = seg["repeat"]
        if rep != "examples":
            _int(rep, f"{w}.repeat", 1, MAX_REPEAT)
        if not seg["loop"] and rep != 1:
            raise _bad(f"{w}.repeat", f"straight code runs once; got repeat {rep!r}")
        for oi, o in enumerate(_list(seg["ops"], f"{w}.ops", 1 << 20)):
            _check_op(o, f"{w}.ops[{oi}]", sizes)
            n_ops += 1
    for slot, columns, w in readouts:
        _str(slot, f"{w} slot", max_len=200)
        if slot not in sizes:
            raise _bad(f"{w} slot", f"{slot!r} is not a slot of the program")
        _str(columns, f"{w} columns", ("x", "all"))
    _dict(p.get("meta", {}) or {}, f"{where}: program.meta")
    consts = _dict(doc["constants"], f"{where}: constants")
    required = [k for k in _CONSTANT_FIELDS if k not in _OPTIONAL_CONSTANTS]
    if not (set(required) <= set(consts) <= set(_CONSTANT_FIELDS)):
        raise _bad(f"{where}: constants", f"fields {sorted(consts)}, expected {sorted(_CONSTANT_FIELDS)}")
    for k in _CONSTANT_FIELDS:
        if k not in consts or k == "activation":
            continue
        if k == "bypass_scale" and consts[k] is None:
            continue
        _num(consts[k], f"{where}: constants.{k}", positive=k != "ln_eps")
    if "pre_ln_anchor" in consts:
        _num(consts["pre_ln_anchor"], f"{where}: constants.pre_ln_anchor", positive=True)
    if "activation" in consts:
        _str(consts["activation"], f"{where}: constants.activation", ACTIVATIONS)
    # memory: every layer builder holds D × D matrices; at most 2 layers per op (+1)
    need = max((2 * n_ops + 1) * width * width, max_len * width) * 8
    if need > MEM_BUDGET:
        raise _bad(where, f"recompiling width {width}, max_len {max_len} and {n_ops} ops would need about "
                          f"{need / 2**30:.1f} GiB, more than the {MEM_BUDGET / 2**30:.0f} GiB load() allows")
    _dict(doc["layout"], f"{where}: layout")
    _dict(doc["weights"], f"{where}: weights")


def _check_op(o, where, sizes):
    _dict(o, where, ["op"])
    kind = _str(o["op"], f"{where}.op", tuple(_OP_FIELDS))
    _dict(o, where, _OP_FIELDS[kind])
    for k in ("src", "dst", "lhs", "rhs", "divisor"):
        if k in o:
            _str(o[k], f"{where}.{k}", max_len=200)
    if kind == "sum" and o.get("count") is not None:
        _str(o["count"], f"{where}.count", max_len=200)
    if kind == "sum" and "scale" in o:  # optional: files written before it existed lack it (scale 1)
        _num(o["scale"], f"{where}.scale")
    dst = sizes.get(o["dst"])
    if kind == "mov":
        r = _dict(o["read"], f"{where}.read", ["kind", "k"])
        rk = _str(r["kind"], f"{where}.read.kind", ("offset", "position", "mean"))
        _int(r["k"], f"{where}.read.k", 0, 2 if rk == "mean" else MAX_LEN_LIMIT)
    elif kind == "mul":
        sh = _list(o["shape"], f"{where}.shape", 3)
        if len(sh) != 3:
            raise _bad(f"{where}.shape", "expected three integers (a, b, c)")
        for v in sh:
            _int(v, f"{where}.shape", 1, MAX_ROWS)
        _num(o["coef"], f"{where}.coef")
    elif kind == "div":
        _num(o["coef"], f"{where}.coef")
        if not isinstance(o["accumulate"], bool):
            raise _bad(f"{where}.accumulate", "expected true or false")
    for key in ("plus", "terms"):
        if key in o:
            for ti, t in enumerate(_list(o[key], f"{where}.{key}", 1 << 10)):
                _list(t, f"{where}.{key}[{ti}]", 2)
                if len(t) != 2:
                    raise _bad(f"{where}.{key}[{ti}]", "expected [slot, matrix]")
                s = _str(t[0], f"{where}.{key}[{ti}][0]", max_len=200)
                if dst is not None and s in sizes:
                    _matrix(t[1], f"{where}.{key}[{ti}][1]", dst, sizes[s])
                else:
                    _list(t[1], f"{where}.{key}[{ti}][1]", MAX_ROWS)
    if "bias" in o and dst is not None:
        _vector(o["bias"], f"{where}.bias", dst)


# ---------------------------------------------------------------------- the weights header
def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (names → dtype/shape/offsets, ``__metadata__``), read alone."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is not a readable safetensors file (truncated); the file is corrupted")
            n = int.from_bytes(head, "little")
            if n > min(MAX_HEADER_BYTES, size - 8):
                raise CheckpointError(f"{path} is not a readable safetensors file (header of {n} bytes in a file of "
                                      f"{size}); the file is corrupted")
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file (header: {exc}); the file is corrupted") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a readable safetensors file (header is not an object); the file is corrupted")
    return header


def check_weights_header(header: dict, doc: dict, where: str) -> None:
    """The embedding tensors' shapes and dtype in the weights file must be those ``circuit.json`` states."""
    c, p = doc["compile"], doc["program"]
    dt = {"float64": "F64", "float32": "F32"}[c["dtype"]]
    want = {"W_E": [p["d"] + 1, c["width"]], "W_pos": [c["max_len"], c["width"]]}
    for name, shape in want.items():
        info = header.get(name)
        if not isinstance(info, dict) or info.get("shape") != shape or info.get("dtype") != dt:
            got = (info.get("dtype"), info.get("shape")) if isinstance(info, dict) else None
            raise CheckpointError(
                f"{where}: tensor {name!r} is {got} in the weights but circuit.json states {(dt, shape)}; "
                f"the files do not belong together — save the circuit again")
