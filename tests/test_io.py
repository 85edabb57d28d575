"""iclconstruct.io: save/load round trips are bit-exact; tampered or foreign files raise CheckpointError."""
import json
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct import io
from iclconstruct.errors import CheckpointError, DivergenceError
from iclconstruct.testing import programs, tokens_for

from edgecases import edge_program


def _roundtrip(model, folder):
    io.save(model, folder)
    return io.load(folder)


def _same_outputs(a, b, tokens):
    oa, ob = a(tokens, check=False), b(tokens, check=False)
    return oa.shape == ob.shape and oa.tobytes() == ob.tobytes()


def _tokens(d, n=5, B=2, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, n, d)) * scale
    return ic.tokens.encode(X, X @ rng.standard_normal(d) * 0.5, rng.standard_normal((B, d)) * scale)


@settings(max_examples=100, deadline=None)
@given(programs(max_ops=6), st.data())
def test_random_programs_round_trip_bit_exact(prog, data):
    model = ic.compile(prog, max_len=32)
    tok = data.draw(tokens_for(prog, max_n=4, max_batch=2))
    with tempfile.TemporaryDirectory() as tmp:
        m2 = _roundtrip(model, tmp)
    assert m2.program.listing() == prog.listing()
    assert m2.row_labels == model.row_labels
    for k, v in model.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    assert _same_outputs(model, m2, tok)


@pytest.mark.parametrize("make", [
    lambda: ic.circuits.sgd(3, 0.01, lam=0.1, w0=[0.5, -1.0, 0.25]),
    lambda: ic.circuits.ridge(3, 0.5),
    lambda: ic.circuits.ridge(2, 0.5, dtype=torch.float32, max_len=33),
    lambda: ic.circuits.sgd(2, 0.02, dtype=torch.float32, max_len=33),
], ids=["sgd", "ridge", "ridge-float32", "sgd-float32"])
def test_circuits_round_trip(make, tmp_path):
    model = make()
    m2 = _roundtrip(model, tmp_path / "c")
    assert m2.dtype == model.dtype and m2.max_len == model.max_len
    assert m2.constants == model.constants
    assert m2.program.meta == model.program.meta
    assert m2.summary() == model.summary()
    assert _same_outputs(model, m2, _tokens(model.d, scale=0.5))


def test_sgd_stability_check_is_reattached(tmp_path):
    m2 = _roundtrip(ic.circuits.sgd(2, 0.4), tmp_path / "sgd")
    with pytest.raises(DivergenceError):
        m2(_tokens(2, scale=1.0))


def test_free_reuse_and_loop_structure_survive(tmp_path):
    """Freed rows reused by a later slot, an empty loop, a loop of 1, a loop at the very end."""
    p = edge_program()
    model = ic.compile(p, max_len=16)
    m2 = _roundtrip(model, tmp_path / "edge")
    assert [s.repeat for s in m2.program.segments] == [s.repeat for s in p.segments]
    assert m2.layout.to_dict() == p.layout.to_dict()
    assert m2.layout.row_labels() == p.layout.row_labels()
    assert _same_outputs(model, m2, _tokens(2))


def test_a_program_width_wider_than_the_model_round_trips(tmp_path):
    """Program(width=W) caps allocation; the model needs only the rows in use (the file check
    used to refuse such a file as corrupted)."""
    p = ic.Program(1, width=40)
    p.slot("s", 1, bound=100.0)
    p.mul("x", "x", "s")
    p.readout("s")
    m = ic.compile(p)
    assert m.d_model < 40
    m.save(tmp_path / "m")
    m2 = io.load(tmp_path / "m")
    assert m2.program.layout.width == 40
    tok = ic.tokens.encode(np.ones((1, 2, 1)), np.ones((1, 2)), np.ones((1, 1)))
    np.testing.assert_array_equal(m2(tok), m(tok))


def test_load_accepts_a_file_inside_the_folder(tmp_path):
    io.save(ic.circuits.sgd(2, 0.01), tmp_path / "m")
    for name in ("model.safetensors", "circuit.json"):
        assert io.load(tmp_path / "m" / name).d == 2


# ---------------------------------------------------------------------- refusals
@pytest.fixture()
def saved(tmp_path):
    folder = tmp_path / "ridge"
    io.save(ic.circuits.ridge(2, 0.5, max_len=17), folder)
    return folder


def _edit_json(folder, fn):
    f = folder / "circuit.json"
    doc = json.loads(f.read_text())
    fn(doc)
    f.write_text(json.dumps(doc))


def test_tampered_weights_raise(saved):
    from safetensors.torch import load_file, save_file

    t = load_file(str(saved / "model.safetensors"))
    t["blocks.0.mlp.W_in"][0, 0] += 1e-12
    save_file(t, str(saved / "model.safetensors"))
    with pytest.raises(CheckpointError, match="program and the weights disagree"):
        io.load(saved)


def test_tampered_program_raises(saved):
    def edit(doc):
        for seg in doc["program"]["segments"]:
            for o in seg["ops"]:
                if o["op"] == "mul":
                    o["coef"] = 2.0 * o["coef"]
                    return

    _edit_json(saved, edit)
    with pytest.raises(CheckpointError, match="program and the weights disagree"):
        io.load(saved)


def test_tampered_constants_raise(saved):
    _edit_json(saved, lambda doc: doc["constants"].update(product_scale=1e4))
    with pytest.raises(CheckpointError, match="disagree"):
        io.load(saved)


def test_broken_program_raises(saved):
    _edit_json(saved, lambda doc: doc["program"]["segments"][0]["ops"][0].update(src="nope"))
    with pytest.raises(CheckpointError, match="cannot be rebuilt"):
        io.load(saved)


def test_tampered_layout_record_raises(saved):
    _edit_json(saved, lambda doc: doc["layout"]["row_labels"].__setitem__(0, "z[0]"))
    with pytest.raises(CheckpointError, match="layout"):
        io.load(saved)


def test_wrong_version_raises(saved):
    _edit_json(saved, lambda doc: doc.update(format_version=99))
    with pytest.raises(CheckpointError, match="format_version 99"):
        io.load(saved)


def test_foreign_json_raises(saved):
    (saved / "circuit.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not an iclconstruct circuit"):
        io.load(saved)


def test_corrupt_json_raises(saved):
    (saved / "circuit.json").write_text('{"format": "iclconstruct.circuit", ')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        io.load(saved)


def test_truncated_weights_raise(saved):
    f = saved / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupted"):
        io.load(saved)


@pytest.mark.parametrize("name", ["model.safetensors", "circuit.json"])
def test_missing_file_raises(saved, name):
    (saved / name).unlink()
    with pytest.raises(CheckpointError, match="no "):
        io.load(saved)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(CheckpointError, match="not a folder"):
        io.load(tmp_path / "nothing")


def test_unserialisable_meta_refused_before_writing(tmp_path):
    m = ic.circuits.sgd(2, 0.01)
    m.program.meta = {"w0": np.zeros(2)}
    with pytest.raises(CheckpointError, match="JSON-serialisable"):
        io.save(m, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_never_pickles(saved):
    assert (saved / "model.safetensors").read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle stream
    doc = json.loads((saved / "circuit.json").read_text())
    assert doc["format_version"] == io.FORMAT_VERSION and doc["compile"]["dtype"] == "float64"
