"""Random programs: compiled model = interpreter at every sublayer (the miscompile guard)."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.testing import assert_matches_interpreter, programs, replay_schedule, tokens_for


@given(programs(), st.data())
def test_random_program_matches_interpreter(prog, data):
    tok = data.draw(tokens_for(prog))
    model = ic.compile(prog)
    assert_matches_interpreter(model, tok)


@given(programs(loops=False), st.data())
def test_schedule_preserves_program_order_semantics(prog, data):
    """Replaying the packed schedule gives the same final state as program order."""
    tok = data.draw(tokens_for(prog))
    model = ic.compile(prog)
    packed = replay_schedule(model, tok)
    plain = ic.interpret(prog, tok)
    np.testing.assert_allclose(packed.H, plain.H, rtol=0, atol=1e-12)
