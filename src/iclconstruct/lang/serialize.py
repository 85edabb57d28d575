"""Programs as JSON-able dicts (the ``program`` part of a saved circuit's ``circuit.json``).

:func:`program_to_dict` describes every slot allocation and free, every op with its
matrices as nested lists, the loops, the input guards, the readout and ``program.meta``;
:func:`program_from_dict` rebuilds the program through its public API, so every check the
program runs on construction runs again. Floats are stored so that they round-trip
exactly (``repr``); infinities as strings.
"""
from __future__ import annotations

import json
import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import CheckpointError
from .guards import InputGuard
from .layout import INPUT_SLOTS, SYSTEM_SLOTS
from .ops import Aff, Count, Div, Mov, Mul, Op, Read, Sum
from .program import Program

__all__ = ["program_to_dict", "program_from_dict", "num", "unnum"]


def num(x: float):
    """A JSON-safe float: finite floats as numbers (``repr`` round-trips exactly), others as strings."""
    x = float(x)
    return x if math.isfinite(x) else repr(x)  # 'inf', '-inf', 'nan'


def unnum(x) -> float:
    if isinstance(x, str):
        if x not in ("inf", "-inf", "nan"):
            raise CheckpointError(f"circuit.json: expected a number, got the string {x!r}")
        return float(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise CheckpointError(f"circuit.json: expected a number, got {x!r}")
    return float(x)


def _matrix(a: np.ndarray) -> list:
    return [[num(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


def _vector(a: Optional[np.ndarray]):
    return None if a is None else [num(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def _unmatrix(m) -> np.ndarray:
    return np.array([[unnum(v) for v in row] for row in m], dtype=np.float64)


def _unvector(v) -> Optional[np.ndarray]:
    return None if v is None else np.array([unnum(x) for x in v], dtype=np.float64)


def _op_to_dict(op: Op) -> dict:
    if isinstance(op, Mov):
        return {"op": "mov", "src": op.src, "dst": op.dst, "read": {"kind": op.read.kind, "k": op.read.k}}
    if isinstance(op, Mul):
        return {"op": "mul", "lhs": op.lhs, "rhs": op.rhs, "dst": op.dst, "shape": list(op.shape),
                "coef": num(op.coef), "plus": [[s, _matrix(W)] for s, W in op.plus], "bias": _vector(op.bias)}
    if isinstance(op, Div):
        d = {"op": "div", "src": op.src, "divisor": op.divisor, "dst": op.dst, "coef": num(op.coef),
             "accumulate": bool(op.accumulate)}
        if op.min_abs:  # files without it (older, or no declared minimum) read as 0
            d["min_abs"] = num(op.min_abs)
        return d
    if isinstance(op, Aff):
        return {"op": "aff", "dst": op.dst, "terms": [[s, _matrix(W)] for s, W in op.terms], "bias": _vector(op.bias)}
    if isinstance(op, Count):
        return {"op": "count", "dst": op.dst}
    if isinstance(op, Sum):
        d = {"op": "sum", "src": op.src, "dst": op.dst, "count": op.count}
        if op.scale != 1.0:  # files without it (older, or unscaled sums) read as scale 1
            d["scale"] = num(op.scale)
        return d
    raise CheckpointError(f"cannot save op {op!r}: only mov, mul, div, aff, count and sum ops are serialisable")


def _op_from_dict(o: dict) -> Op:
    """The op a dict describes (checked against the program when it is replayed)."""
    kind = o.get("op")
    if kind == "mov":
        r = o["read"]
        if r["kind"] not in ("offset", "position", "mean"):
            raise CheckpointError(f"circuit.json: unknown mov read kind {r['kind']!r}")
        return Mov(o["src"], o["dst"], Read(r["kind"], int(r["k"])))
    if kind == "mul":
        return Mul(o["lhs"], o["rhs"], o["dst"], tuple(int(v) for v in o["shape"]), unnum(o["coef"]),
                   tuple((s, _unmatrix(W)) for s, W in o["plus"]), _unvector(o["bias"]))
    if kind == "div":
        return Div(o["src"], o["divisor"], o["dst"], unnum(o["coef"]), bool(o["accumulate"]), unnum(o.get("min_abs", 0.0)))
    if kind == "aff":
        return Aff(o["dst"], tuple((s, _unmatrix(W)) for s, W in o["terms"]), _unvector(o["bias"]))
    if kind == "count":
        return Count(o["dst"])
    if kind == "sum":
        return Sum(o["src"], o["dst"], o.get("count"), unnum(o.get("scale", 1.0)))
    raise CheckpointError(f"circuit.json: unknown op {kind!r}; expected mov, mul, div, aff, count or sum")


def _guard_to_dict(g: InputGuard) -> dict:
    return {k: (num(v) if isinstance(v, float) else v) for k, v in g.to_dict().items()}


def _guard_from_dict(d: dict) -> InputGuard:
    num_fields = ("scale", "shift", "limit", "value")
    return InputGuard(**{k: (unnum(v) if k in num_fields else v) for k, v in d.items()})


def _event_to_json(ev: tuple) -> list:
    kind = ev[0]
    if kind == "slot":
        _, name, size, bound, start = ev
        return ["slot", name, int(size), num(bound), int(start)]
    if kind == "op":
        return ["op"]  # the op itself is the next one of ``segments``
    if kind == "guard":
        return ["guard", _guard_to_dict(ev[1])]
    return list(ev)  # free, loop, end, readout: names and plain values


def program_to_dict(program: Program) -> dict:
    """JSON-able description of ``program`` from which :func:`program_from_dict` rebuilds it.

    ``events`` is the program's event log (:attr:`Program.events`) in order; an ``["op"]``
    event stands for the next op of ``segments``, which lists the ops (as dicts) by segment,
    loops marked, so that they can be read (and diffed) in program order.
    """
    lay = program.layout
    segments = [{"loop": i % 2 == 1, "repeat": seg.repeat, "ops": [_op_to_dict(op) for op in seg.ops]}
                for i, seg in enumerate(program.segments)]
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
        "x_bound": num(lay["x"].bound),
        "y_bound": num(lay["y"].bound),
        "width": lay.width,
        "segments": segments,
        "events": [_event_to_json(ev) for ev in program.events],
        "meta": meta,
    }


def program_from_dict(data: dict) -> Program:
    """Rebuild a :class:`~iclconstruct.lang.program.Program` from :func:`program_to_dict` output.

    Replays the event log through :meth:`Program.replay` (so every construction-time check
    runs again) and requires the loops it builds to be the ones ``segments`` lists.
    Dicts without ``events`` (format version 1) get their log derived from their slot list.
    """
    segs = data["segments"]
    if not segs or segs[0]["loop"] or any(bool(s["loop"]) != (i % 2 == 1) for i, s in enumerate(segs)):
        raise CheckpointError("circuit.json: program segments must alternate straight code and loops")
    ops = iter([_op_from_dict(o) for seg in segs for o in seg["ops"]])
    log = data["events"] if "events" in data else _events_v1(data)
    events = []
    for ev in log:
        kind = ev[0]
        if kind == "slot":
            events.append(("slot", ev[1], int(ev[2]), unnum(ev[3]), int(ev[4])))
        elif kind == "op":
            op = next(ops, None)
            if op is None:
                raise CheckpointError("circuit.json: the event log has more ops than the segments list")
            events.append(("op", op))
        elif kind == "guard":
            events.append(("guard", _guard_from_dict(ev[1])))
        else:
            events.append(tuple(ev))
    if next(ops, None) is not None:
        raise CheckpointError("circuit.json: the segments list has ops that the event log never adds")
    p = Program.replay(events, d=int(data["d"]), x_bound=unnum(data["x_bound"]), y_bound=unnum(data["y_bound"]),
                       width=data["width"], name=str(data["name"]))
    if [(len(s.ops), s.repeat) for s in p.segments] != [(len(s["ops"]), s["repeat"]) for s in segs]:
        raise CheckpointError("circuit.json: the loops of the event log differ from the segments list")
    p.meta = data.get("meta", {}) or {}
    return p


# ---------------------------------------------------------------------- format version 1
def _ops_touching(op_dict: dict) -> List[str]:
    keys = ("src", "dst", "lhs", "rhs", "divisor", "count")
    names = [op_dict[k] for k in keys if op_dict.get(k)]
    names += [s for s, _ in op_dict.get("plus", [])] + [s for s, _ in op_dict.get("terms", [])]
    return names


def _events_v1(data: dict) -> list:
    """The event log of a version-1 program dict, which lists slots with their first row.

    Each freed slot is freed at the latest point allowed: after the last op that touches it
    (after the whole loop, if that op is inside one), just before the first later slot
    that reuses its rows; the remaining freed slots at the end.
    """
    segs = data["segments"]
    flat: List[Tuple[int, dict]] = [(si, o) for si, seg in enumerate(segs) for o in seg["ops"]]
    seg_end = {si: i for i, (si, _) in enumerate(flat)}
    last_use: Dict[str, int] = {}
    for i, (_, o) in enumerate(flat):
        for n in _ops_touching(o):
            last_use[n] = i

    def after(i: int) -> int:
        if i < 0:
            return 0
        si = flat[i][0]
        return (seg_end[si] if segs[si]["loop"] else i) + 1

    actions: Dict[int, list] = {}  # events to run just before op k (k = len(flat): at the end)
    point, freed, allocated = 0, set(), []
    for s in data["slots"]:
        start, size = int(s["start"]), int(s["size"])
        frees = [f for f in allocated if not f["live"] and f["name"] not in freed
                 and int(f["start"]) < start + size and start < int(f["start"]) + int(f["size"])]
        for f in frees:
            point = max(point, after(last_use.get(f["name"], -1)))
        acts = actions.setdefault(point, [])
        for f in frees:
            acts.append(["free", f["name"]])
            freed.add(f["name"])
        acts.append(["slot", s["name"], s["size"], s["bound"], s["start"]])
        allocated.append(s)
    actions.setdefault(len(flat), []).extend(
        ["free", f["name"]] for f in allocated if not f["live"] and f["name"] not in freed)
    events: list = []
    cur, in_loop = 0, False
    for k in range(len(flat) + 1):
        si = flat[k][0] if k < len(flat) else len(segs)
        if in_loop and si != cur:
            events.append(["end"])
            in_loop = False
        events.extend(actions.get(k, []))
        for sj in range(cur + 1, min(si + 1, len(segs))):  # segments entered (earlier loops were empty)
            if segs[sj]["loop"]:
                events.append(["loop", segs[sj]["repeat"]])
                if sj < si or k == len(flat):
                    events.append(["end"])
                else:
                    in_loop = True
        if k == len(flat):
            break
        cur = si
        events.append(["op"])
    ro = data["readout"]
    if ro["slot"] is not None:
        events.append(["readout", ro["slot"], ro["columns"]])
    return events
