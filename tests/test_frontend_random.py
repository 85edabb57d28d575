"""Random front-end algorithms (``iclconstruct.testing.frontend_algorithms``): compiled model =
interpreter at every sublayer, and interpreter = the traced expression evaluated directly."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.testing import assert_matches_interpreter, frontend_algorithms, random_algorithm, shifted_tasks


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frontend_algorithms(), st.data())
def test_random_algorithm_compiles_to_its_meaning(alg, data):
    X, y, xq = data.draw(shifted_tasks(alg.d, max_n=alg.max_n, x_bound=alg.x_bound, y_bound=alg.y_bound))
    tok = ic.tokens.encode(X, y, xq)
    got = alg.interpret(tok)[0]
    n = len(X)
    want = [alg.evaluate(X[:k], y[:k], xq if k == n else X[k]) for k in range(n + 1)]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert_matches_interpreter(alg.compile(), tok, rtol=1e-6, atol=1e-6)
    from iclconstruct.frontend.lower import _same_layer_reuse
    assert not _same_layer_reuse(alg.program())


def test_regression_reused_rows_are_not_checked_against_the_dead_slot():
    """Found by the soak: liveness gave the rows of a slot written in a layer's attention (and dead
    after that layer's MLP) to a slot written by the same MLP; the model's after-layer bound check
    then read the new value against the old slot's bound. The front end now keeps such slots."""
    alg = random_algorithm(2, 46598184, 3, True)
    tok = ic.tokens.encode(np.array([[-1.51484779, -1.998]]), np.array([1.998]), np.array([-1.33736059, -1.87625487]))
    assert_matches_interpreter(alg.compile(), tok, rtol=1e-6, atol=1e-6)
    from iclconstruct.frontend.lower import _same_layer_reuse
    assert not _same_layer_reuse(alg.program())
