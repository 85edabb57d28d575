"""Long soak of the miscompile guard (not a test): many random programs vs the interpreter.

    python bench/soak_random_programs.py --examples 3000

CI runs the same property with 100 examples (tests/test_random_programs.py).
"""
import argparse

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.testing import assert_matches_interpreter, programs, tokens_for


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=3000)
    args = ap.parse_args()
    torch.set_num_threads(1)

    @settings(max_examples=args.examples, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(programs(), st.data())
    def soak(prog, data):
        assert_matches_interpreter(ic.compile(prog), data.draw(tokens_for(prog)))

    soak()
    print(f"{args.examples} random programs: compiled model = interpreter at every sublayer")


if __name__ == "__main__":
    main()
