"""The program's event log: replay, frozen copies owned by compiled models, saved files (v1 and v2)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings

import iclconstruct as ic
from iclconstruct import errors as E
from iclconstruct.lang.program import Segment, repeat_times
from iclconstruct.lang.serialize import program_from_dict, program_to_dict
from iclconstruct.testing import programs

from edgecases import edge_program


def test_events_record_everything_in_order():
    p = edge_program()
    kinds = [e[0] for e in p.events]
    assert kinds == ["slot", "slot", "slot", "op", "loop", "op", "end", "free", "slot", "loop", "end", "op",
                     "loop", "op", "end", "free", "readout"]


@settings(max_examples=30, deadline=None)
@given(programs())
def test_replay_rebuilds_the_same_program(p):
    q = p.copy()
    assert q.listing() == p.listing() and q.layout.to_dict() == p.layout.to_dict()
    assert q.layout.row_labels() == p.layout.row_labels() and q.readout_slot == p.readout_slot
    assert [s.repeat for s in q.segments] == [s.repeat for s in p.segments]


def test_compiled_model_owns_a_frozen_copy():
    p = edge_program()
    m = ic.compile(p, max_len=16)
    before = m.program.listing()
    p.slot("late", 1)
    p.aff("late", bias=1.0)
    assert m.program is not p and m.program.listing() == before
    assert "late" not in m.layout
    with pytest.raises(E.ICLConstructError, match="frozen"):
        m.program.aff("o", bias=1.0)
    with pytest.raises(E.ICLConstructError, match="frozen"):
        m.program.slot("z", 1)
    with pytest.raises(E.LayoutError, match="frozen"):
        m.layout.alloc("z", 1)
    with pytest.raises(ValueError):  # op matrices are read-only
        m.program.ops[1].terms[0][1][0, 0] = 5.0


def test_the_callers_arrays_do_not_reach_the_program():
    W = np.eye(2)
    p = ic.Program(2)
    p.slot("a", 2)
    p.aff("a", {"x": W})
    W[0, 0] = 9.0
    assert p.ops[0].terms[0][1][0, 0] == 1.0


def test_segment_times_is_the_one_loop_count():
    assert Segment(repeat="examples").times(9) == 4 == repeat_times("examples", 8)
    assert Segment(repeat=3).times(9) == 3
    m = ic.compile(edge_program(), max_len=16)
    T = 7
    assert len(m.unrolled(T)) == sum(len(s.layers) * s.times(T) for s in m.schedule.segments)


def _as_v1(doc):
    """The version-1 program dict of the same program: slots with their rows, no event log."""
    p = program_from_dict(doc)
    lay = p.layout.to_dict()
    old = {k: v for k, v in doc.items() if k != "events"}
    old["slots"] = [s for s in lay["slots"] if s["name"] not in ("y", "x", "pos", "one", "is_y", "anchor", "pair", "bal")]
    old["readout"] = {"slot": p.readout_slot, "columns": p.readout_columns}
    return old


@settings(max_examples=30, deadline=None)
@given(programs())
def test_version_1_program_dicts_still_load(p):
    q = program_from_dict(_as_v1(program_to_dict(p)))
    assert q.listing() == p.listing() and q.layout.to_dict() == p.layout.to_dict()
    assert [s.repeat for s in q.segments] == [s.repeat for s in p.segments]


def test_version_1_edge_program_loads():
    p = edge_program()
    q = program_from_dict(_as_v1(program_to_dict(p)))
    assert q.listing() == p.listing() and q.layout.row_labels() == p.layout.row_labels()
    assert [s.repeat for s in q.segments] == [s.repeat for s in p.segments]


def test_inconsistent_event_log_is_refused():
    doc = program_to_dict(edge_program())
    doc["events"].append(["op"])
    with pytest.raises(E.CheckpointError, match="more ops"):
        program_from_dict(doc)
    doc = program_to_dict(edge_program())
    doc["events"] = [e for e in doc["events"] if e[0] not in ("loop", "end")]
    with pytest.raises(E.CheckpointError, match="loops"):
        program_from_dict(doc)


def test_compiling_inside_an_open_loop_is_refused():
    p = ic.Program(1)
    p.slot("a", 1)
    with p.loop(2):
        p.aff("a", {"x": 1.0})
        p.readout("a")
        with pytest.raises(E.ICLConstructError, match="loop is still open"):
            ic.compile(p)
    ic.compile(p)
