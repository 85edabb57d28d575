"""The paper's Theorem 1 written with the front end: the same predictions as the hand-written
program (``circuits.sgd.sgd_program_by_hand``, which ``ic.circuits.sgd`` was until it too was
built by the front end), in the same 2 layers per example and no more width."""
import numpy as np
import pytest
from hypothesis import given, settings

import iclconstruct as ic
from iclconstruct.circuits.sgd import sgd_program_by_hand
from iclconstruct.testing import shifted_tasks


def hand_sgd(d, lr):
    return ic.compile(sgd_program_by_hand(d, lr))


def frontend_sgd(d, lr, w_bound):
    @ic.algorithm(d=d, name=f"frontend_sgd(d={d})")
    def sgd(ctx):
        w = ctx.zeros(d)
        for x, y in ctx.examples():
            w = ctx.bound(w - 2 * lr * x * (x @ w - y), w_bound)
        return w
    return sgd


@pytest.mark.parametrize("d", [1, 4, 8])
def test_frontend_sgd_costs_no_more_than_the_hand_written_circuit(d):
    hand = hand_sgd(d, 0.01)
    mine = frontend_sgd(d, 0.01, hand.layout["w"].bound).compile(max_len=hand.max_len)
    assert mine.layers_per_example() == hand.layers_per_example() == 2
    assert mine.d_model <= hand.d_model


@settings(max_examples=10, deadline=None)
@given(shifted_tasks(4, max_n=30, x_bound=6.0, y_bound=30.0))
def test_frontend_sgd_predicts_as_the_hand_written_circuit(task):
    X, y, xq = task
    X = X / 3.0  # the SGD circuit's stability guard: 2·lr·‖x‖² ≤ 1
    hand = hand_sgd(4, 0.01)
    alg = frontend_sgd(4, 0.01, hand.layout["w"].bound)
    tok = ic.tokens.encode(X, y, xq)
    ref = hand(tok)[0]
    np.testing.assert_allclose(alg.interpret(tok)[0], ic.interpret(hand.program, tok).output[0], rtol=1e-12,
                               atol=1e-12)
    assert np.all(np.abs(alg.compile()(tok)[0] - ref) <= 1e-6 * (1 + np.abs(ref)))
