"""Programs shared by several test modules."""
import iclconstruct as ic


def edge_program():
    """Freed rows reused by a later slot, an empty loop, a loop of 1, a loop at the very end."""
    p = ic.Program(2, name="edge")
    p.slot("a", 2, bound=10); p.slot("b", 2, bound=10); p.slot("o", 1, bound=200)
    p.mov("x", "a", offset=1)
    with p.loop(1):
        p.aff("b", {"a": 0.5})
    p.free("a")
    p.slot("c", 2, bound=10)                   # reuses a's rows
    with p.loop("examples"):
        pass
    p.mov("b", "c", offset=2)
    with p.loop(2):
        p.mul("c", "x", "o", coef=0.5)
    p.free("b")
    p.readout("o")
    return p
