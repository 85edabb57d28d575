"""Fuzzing saved files (classes 5 and 6): flip bytes, truncate, edit fields.

Never a silent load (a model other than the saved one) and never an exception that is not
the library's: every mutation is refused with ``CheckpointError`` or loads the identical model.
"""
import functools
import random
import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.fuzzing import edit_field, flip_byte, load_outcome, truncate


@functools.lru_cache(None)
def _saved_circuit():
    tmp = Path(tempfile.mkdtemp(prefix="iclc-fuzz-"))
    model = ic.circuits.sgd(2, 0.05, lam=0.1, max_len=17)
    ic.io.save(model, tmp / "c")
    return model, tmp / "c"


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["flip-json", "flip-weights", "truncate-json", "truncate-weights", "edit", "edit", "edit"]),
       st.integers(0, 2**32 - 1))
def test_corrupted_circuit_is_refused_or_identical(how, seed):
    model, src = _saved_circuit()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "c"
        shutil.copytree(src, folder)
        if how == "edit":
            what = edit_field(folder / "circuit.json", rng)
        else:
            fn = flip_byte if how.startswith("flip") else truncate
            what = fn(folder / ("circuit.json" if how.endswith("json") else "model.safetensors"), rng)
        kind, detail = load_outcome(folder, model, ic.io.load)
    assert kind in ("refused", "identical"), f"{what}: {kind}: {detail}"


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["flip", "flip", "truncate"]), st.integers(0, 2**32 - 1))
def test_corrupted_learner_checkpoint_is_refused_or_identical(how, seed):
    from iclconstruct.icl.shipped import pretrained, pretrained_path

    original = pretrained("lite-d8")
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "m.safetensors"
        shutil.copy(pretrained_path("lite-d8"), f)
        what = (flip_byte if how == "flip" else truncate)(f, rng)
        kind, detail = load_outcome(f, original, ic.icl.load)
    assert kind in ("refused", "identical"), f"{what}: {kind}: {detail}"
