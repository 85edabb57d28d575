"""ICLTransformer, training loop and checkpoints (paper App. D)."""
import json

import numpy as np
import pytest
import torch

from iclconstruct import icl
from iclconstruct.errors import CheckpointError, ContextTooLongError, ShapeError

torch.set_num_threads(1)


def small(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(d=3, n_layers=2, width=16, n_heads=2, max_points=7)
    cfg.update(kw)
    return icl.ICLTransformer(**cfg)


def test_shapes_causality_and_predict():
    m = small().eval()
    t = icl.sample_tasks(4, 7, 3, seed=0)
    pp = m.predict_prefixes(t.X, t.y)
    assert pp.shape == (4, 7) and pp.dtype == np.float64
    # predict(X[:k], y[:k], x_k) equals the prefix column k (causal attention)
    for k in (0, 3, 6):
        np.testing.assert_allclose(m.predict(*t.prefix(k)), pp[:, k], rtol=1e-5, atol=1e-6)
    hs = m.hidden_states(torch.zeros(2, 5, 4))
    assert len(hs) == 3 and hs[0].shape == (2, 5, 16)
    with pytest.raises(ContextTooLongError):
        m.predict(np.zeros((1, 7, 3)), np.zeros((1, 7)), np.zeros((1, 3)))
    with pytest.raises(ShapeError):
        m(torch.zeros(1, 3, 5))
    with pytest.raises(ShapeError):
        small(width=15, n_heads=2)


def test_tiny_training_lowers_loss(tmp_path):
    """d = 1 escapes the predict-0 plateau within a few hundred steps (larger d needs longer)."""
    m = small(d=1, width=32)
    t = icl.sample_tasks(500, 7, 1, seed=11)
    before = np.mean((m.predict_prefixes(t.X, t.y) - t.y) ** 2)
    res = icl.train(m, 300, batch_size=32, lr=3e-3, out_dir=tmp_path, progress=False, log_every=50, warmup_frac=0.1)
    after = np.mean((m.predict_prefixes(t.X, t.y) - t.y) ** 2)
    assert res.history[-1]["loss"] < 0.8 * res.history[0]["loss"]
    assert after < 0.8 * before
    assert (tmp_path / "log.csv").is_file() and (tmp_path / "model.safetensors").is_file()


def test_checkpoint_roundtrip_bit_exact(tmp_path):
    m = small(seed=3)
    icl.save_checkpoint(tmp_path, m, step=7)
    m2 = icl.load(tmp_path)
    m3 = icl.load(tmp_path / "model.safetensors")
    for (k, a), b, c in zip(m.state_dict().items(), m2.state_dict().values(), m3.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c), k
    assert icl.read_config(tmp_path)["step"] == 7


def test_resume_mid_run_matches_straight_run(tmp_path, monkeypatch):
    kw = dict(batch_size=8, lr=1e-3, progress=False, ckpt_every=4)
    straight = icl.train(small(), 8, out_dir=tmp_path / "a", **kw).model
    # interrupt after the step-4 checkpoint by raising inside the optimizer step
    import iclconstruct.icl.training as tr

    calls = {"n": 0}
    real = tr.ckpt.save_checkpoint

    def save_then_stop(*a, **k):
        real(*a, **k)
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(tr.ckpt, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        icl.train(small(), 8, out_dir=tmp_path / "b", **kw)
    monkeypatch.setattr(tr.ckpt, "save_checkpoint", real)
    assert icl.read_config(tmp_path / "b")["step"] == 4
    resumed = icl.train(small(seed=5), 8, out_dir=tmp_path / "b", **kw).model
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_with_other_settings_refused(tmp_path):
    icl.train(small(), 2, batch_size=4, out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="different settings"):
        icl.train(small(), 2, batch_size=4, noise_var=0.5, out_dir=tmp_path, progress=False)


def test_corrupted_and_mismatched_checkpoints(tmp_path):
    m = small()
    icl.save_checkpoint(tmp_path, m)
    f = tmp_path / "model.safetensors"
    raw = bytearray(f.read_bytes())
    # flip one byte in the tensor data -> hash mismatch
    bad = tmp_path / "flip.safetensors"
    raw2 = raw.copy()
    raw2[-5] ^= 0xFF
    bad.write_bytes(bytes(raw2))
    with pytest.raises(CheckpointError, match="corrupted"):
        icl.load(bad)
    # truncated file
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CheckpointError):
        icl.load(trunc)
    # garbage / missing
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        icl.load(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        icl.load(tmp_path / "nope.safetensors")
    # architecture mismatch
    with pytest.raises(CheckpointError, match="shape"):
        icl.load_weights(small(width=32), tmp_path)
    with pytest.raises(CheckpointError, match="missing"):
        icl.load_weights(small(n_layers=3), tmp_path)
    # a foreign safetensors file without our metadata
    import safetensors.torch as st

    st.save_file({"a": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="format"):
        icl.load(tmp_path / "foreign.safetensors")
    # config.json of another format
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="format"):
        icl.read_config(tmp_path)


def test_presets():
    p = icl.preset("tiny")
    assert set(p) == {"model", "train"}
    icl.ICLTransformer(**p["model"])
    with pytest.raises(Exception, match="preset"):
        icl.preset("huge")


def test_garg_curriculum_string():
    res = icl.train(small(d=4), 120, batch_size=4, progress=False, curriculum="garg", log_every=1)
    d_act = [h["d_active"] for h in res.history]
    n_act = [h["n_points"] for h in res.history]
    assert d_act[0] == 1 and d_act[-1] == 4 and n_act[0] == 3 and n_act[-1] == 7
    assert d_act == sorted(d_act) and n_act == sorted(n_act)
    with pytest.raises(Exception, match="curriculum"):
        icl.train(small(), 2, curriculum="fast", progress=False)
