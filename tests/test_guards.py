"""Input guards are data: recorded by the program, enforced by lang.checks in both paths, saved."""
import numpy as np
import pytest

import iclconstruct as ic
from iclconstruct import errors as E
from iclconstruct import io
from iclconstruct.lang.guards import InputGuard
from iclconstruct.lang.serialize import program_from_dict, program_to_dict


def _tokens(X, xq=None):
    X = np.asarray(X, dtype=float)
    return ic.tokens.encode(X, X.sum(-1) * 0.1, X[..., 0, :] if xq is None else xq)


def _sq_program(guard):
    p = ic.Program(2)
    p.slot("s", 1, bound=200)
    p.mul("x", "x", "s")
    p.readout("s")
    p.guard(guard)
    return p


G = InputGuard(scale=0.5, shift=1.0, limit=3.0, expr="0.5·(‖x_i‖² + 1)", reason="too big", param="k", value=0.5)


@pytest.mark.parametrize("X, refused", [
    (np.full((1, 3, 2), 1.0), False),          # 0.5·(2 + 1) = 1.5
    (np.full((1, 3, 2), 1.7), True),           # 0.5·(5.78 + 1) = 3.39 > 3
    (np.array([[[0.1, 0.1], [2.0, 2.0]]]), True),  # the largest example decides
])
def test_interpreter_and_model_refuse_the_same_inputs(X, refused):
    p = _sq_program(G)
    m = ic.compile(p)
    tok = _tokens(X)
    for run in (lambda: ic.interpret(p, tok), lambda: m(tok)):
        if refused:
            with pytest.raises(E.DivergenceError, match=r"use k <= "):
                run()
        else:
            run()


def test_the_query_is_not_an_example():
    p = _sq_program(G)
    tok = _tokens(np.full((1, 2, 2), 0.5), xq=np.full((1, 2), 3.0))  # |x_q|² = 18 but it has no label
    ic.compile(p)(tok)
    ic.interpret(p, tok)


def test_advice_satisfies_the_guard():
    sq = 5.78
    err = G.refusal(sq)
    best = float(str(err).rsplit("<= ", 1)[1])
    assert G.quantity(sq) * best / G.value == pytest.approx(G.limit, rel=1e-3)


def test_guards_round_trip_and_come_back_with_the_program(tmp_path):
    p = _sq_program(G)
    assert program_from_dict(program_to_dict(p)).guards == p.guards
    m2 = io.load(io.save(ic.compile(p), tmp_path / "g"))
    with pytest.raises(E.DivergenceError):
        m2(_tokens(np.full((1, 3, 2), 1.7)))


def test_sgd_guards_refuse_in_the_interpreter_too():
    p = ic.circuits.sgd_program(2, lr=0.5)
    X = np.full((1, 3, 2), 2.0)
    with pytest.raises(E.DivergenceError, match="lr"):
        ic.interpret(p, _tokens(X))


@pytest.mark.parametrize("bad", [
    dict(scale=0.0), dict(limit=-1.0), dict(value=float("nan")), dict(error="ValueError"), dict(param=""),
])
def test_malformed_guards_are_refused(bad):
    kw = dict(scale=1.0, shift=0.0, limit=1.0, expr="e", reason="r", param="p", value=1.0)
    kw.update(bad)
    with pytest.raises(E.ICLConstructError):
        InputGuard(**kw)
    with pytest.raises(E.ICLConstructError, match="InputGuard"):
        ic.Program(1).guard("not a guard")
