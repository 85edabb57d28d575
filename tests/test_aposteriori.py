"""The ridge circuit's a-posteriori error bound (numerics/aposteriori.py): sound, useful, enforced everywhere."""
import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct import errors as E
from iclconstruct.numerics.aposteriori import (FLOAT32_RIDGE_ACCURACY, FLOAT64_RIDGE_ACCURACY, ridge_bounds,
                                               spec_for)
from iclconstruct.runtime.stream import run_pruned
from iclconstruct.testing import regression_tasks
from iclconstruct.tokens import encode

# docs/reliability.md: float32 ridge(2, 1.0) on four nearly collinear corner examples predicts 4.19 (outer form;
# −24.48 in the gain form, float32's default since 2026-12-03) where
# ridge gives −25.2, and every range check passes (found by numerics.adversary.worst_error)
ADVERSARIAL = np.array([[0.0, 5.906475939749397, -5.3532997706965375], [22.332515146815037, 0.0, 0.0],
                        [0.0, -6.0, 6.0], [24.114288928163692, 0.0, 0.0],
                        [0.0, 5.462084271256766, -5.427346634171256], [22.312837747005165, 0.0, 0.0],
                        [0.0, -5.673322575478093, 5.907565764250306], [-20.09142416923802, 0.0, 0.0],
                        [0.0, -5.530210700334848, -6.0]])[None]


@functools.lru_cache(maxsize=None)
def ridge_model(d, lam, dtype=torch.float64):
    return ic.circuits.ridge(d, lam, dtype=dtype)


def exact_ridge(tok, lam):
    """``(B, C)`` ridge predictions at every x̃ column of float64 tokens (numpy reference)."""
    B, T, d1 = tok.shape
    out = np.zeros((B, (T + 1) // 2))
    for c in range(0, T, 2):
        k = c // 2
        X, y = tok[:, 0 : 2 * k : 2, 1:], tok[:, 1 : 2 * k : 2, 0]
        w = np.zeros((B, d1 - 1)) if k == 0 else ic.reference.ridge(X, y, lam)
        out[:, k] = np.einsum("bd,bd->b", w, tok[:, c, 1:])
    return out


def assert_sound(m, tok, lam):
    """Wherever the bound is finite, |model − ridge| ≤ bound; where the model serves, it is within its accuracy."""
    tok = np.asarray(tok, dtype=np.float64)
    out = np.asarray(m(tok, check=False), dtype=np.float64)
    v = m.verify(tok, check=False)
    np.testing.assert_array_equal(v.predictions, out)
    ref = exact_ridge(tok, lam)
    err = np.abs(out - ref)
    fin = np.isfinite(v.bounds)
    assert (err[fin] <= v.bounds[fin]).all(), (err, v.bounds)
    assert (~np.isfinite(out) <= ~fin).all()  # a non-finite prediction never has a finite bound
    acc = FLOAT64_RIDGE_ACCURACY if m.dtype == torch.float64 else FLOAT32_RIDGE_ACCURACY
    assert (err[v.ok] <= acc * (1 + np.abs(ref[v.ok]))).all()
    return v


@st.composite
def collinear_tasks(draw, d):
    """Nearly collinear examples at the corners of the input box (the Sherman–Morrison worst case)."""
    n = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    corner = rng.choice([-1.0, 1.0], size=d) * 6.0
    spread = draw(st.sampled_from([1e-8, 1e-5, 1e-3, 3e-2, 0.3]))
    s = rng.choice([-1.0, 1.0], size=(1, n, 1)) * rng.uniform(0.9, 1.0, size=(1, n, 1))
    X = np.clip(s * corner + rng.uniform(-1, 1, size=(1, n, d)) * 6.0 * spread, -6.0, 6.0)
    y = rng.uniform(-1, 1, size=(1, n)) * draw(st.sampled_from([1.0, 6.0, 20.0]))
    xq = np.clip(-corner * rng.uniform(0.9, 1.0) + rng.uniform(-1, 1, size=d) * 0.1, -6.0, 6.0)[None]
    return X, y, xq


CONFIGS = [(d, lam, dt) for d in (1, 2, 3) for lam in (0.3, 1.0) for dt in (torch.float64, torch.float32)]


# ---------------------------------------------------------------------- (a) soundness
@settings(max_examples=60)
@given(st.sampled_from(CONFIGS), st.data())
def test_bound_is_sound_on_random_tasks(cfg, data):
    d, lam, dt = cfg
    X, y, xq = data.draw(regression_tasks(d=d, bound=6.0, max_n=12, max_batch=3))
    assert_sound(ridge_model(d, lam, dt), encode(X, y, xq), lam)


@settings(max_examples=60)
@given(st.sampled_from(CONFIGS), st.data())
def test_bound_is_sound_on_near_collinear_corner_inputs(cfg, data):
    d, lam, dt = cfg
    X, y, xq = data.draw(collinear_tasks(d))
    assert_sound(ridge_model(d, lam, dt), encode(X, y, xq), lam)


@pytest.mark.parametrize("form", ["outer", "gain"])
def test_bound_is_sound_and_refuses_on_the_documented_adversarial_input(form):
    """The outer form errs by 29 there; the gain form (float32's default) by 0.73 (2.8e-2 relative):
    both above float32's stated 1e-2, both refused."""
    v = assert_sound(ic.circuits.ridge(2, 1.0, dtype=torch.float32, form=form), ADVERSARIAL, 1.0)
    assert not v.ok[0, -1]
    if form == "outer":
        assert v.bounds[0, -1] > 20
    else:
        assert 0.1 < v.bounds[0, -1] < 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_worst_error_found_through_the_checks_is_within_the_stated_accuracy(dtype):
    from iclconstruct.numerics.adversary import worst_error

    m = ridge_model(2, 1.0, dtype)
    f = worst_error(m, 4, corners=16, rounds=2, batch=8)
    if f.tokens is not None:
        tok = np.asarray(f.tokens, dtype=np.float64)
        v = assert_sound(m, tok, 1.0)
        assert v.ok.all()  # worst_error only keeps inputs that every check serves
        ref = exact_ridge(tok, 1.0)
        acc = FLOAT64_RIDGE_ACCURACY if dtype == torch.float64 else FLOAT32_RIDGE_ACCURACY
        assert f.error <= acc * (1 + np.abs(ref).max())


def test_bound_formula_against_an_exact_solution():
    """Inject a known weight error: the bound covers it and is within a factor of a few of it."""
    rng = np.random.default_rng(1)
    X, y, xq = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5)), rng.standard_normal((2, 3))
    tok = encode(X, y, xq)
    ref = exact_ridge(tok, 0.5)
    cols = np.arange(0, tok.shape[1], 2)
    w = np.zeros((2, len(cols), 3))
    for c in cols:
        k = c // 2
        if k:
            w[:, k] = ic.reference.ridge(X[:, :k], y[:, :k], 0.5)
    dw = 1e-4 * rng.standard_normal(w.shape)
    yh = np.einsum("bcd,bcd->bc", w + dw, tok[:, cols, 1:])
    b = ridge_bounds(tok, cols, w + dw, yh, 0.5)
    b1 = ridge_bounds(tok, cols, w + dw, yh, 0.5, corrected=False)  # the residual bound (1) alone
    err = np.abs(yh - ref)
    assert (err <= b).all() and (b <= 1.01 * err + 1e-12).all()
    assert (err <= b1).all() and (b <= b1).all()


# ---------------------------------------------------------------------- (b) the documented silent answer
def test_documented_float32_example_is_refused():
    m = ridge_model(2, 1.0, torch.float32)
    with pytest.raises(E.PrecisionError) as exc:
        m(ADVERSARIAL)
    assert isinstance(exc.value, E.OutOfRangeError) and isinstance(exc.value, E.ICLConstructError)


# ---------------------------------------------------------------------- (c) typical inputs are served
@pytest.mark.parametrize("lam", [0.1, 0.3, 1.0])
def test_gaussian_float64_d8_n32_is_not_refused(lam):
    rng = np.random.default_rng(int(lam * 10))
    X = rng.standard_normal((4, 32, 8))
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((4, 8)))
    m = ridge_model(8, lam)
    out = m.predict_prefixes(X, y)  # served: no PrecisionError
    assert out.shape == (4, 32)
    xq = rng.standard_normal((4, 8))
    v = m.verify(encode(X, y, xq))
    assert v.ok.all() and v.max_bound < 1e-7


def test_gaussian_float32_d4_lam1_is_not_refused():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((8, 32, 4))
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((8, 4)))
    xq = rng.standard_normal((8, 4))
    m = ridge_model(4, 1.0, torch.float32)
    m(encode(X, y, xq))
    v = m.verify(encode(X, y, xq))
    assert v.ok.all() and (v.bounds / v.tolerance).max() < 0.5


# ---------------------------------------------------------------------- (d) every path refuses
def _xyq():
    t = ADVERSARIAL[0]
    return t[0:8:2, 1:], t[1:8:2, 0], t[8, 1:]


def _paths(m):
    X, y, xq = _xyq()
    tok32 = torch.as_tensor(ADVERSARIAL, dtype=torch.float32)

    def stream():
        s = m.stream()
        for i in range(4):
            s.add(X[i], y[i])
        return s.predict(xq)

    return {
        "forward": lambda: m(ADVERSARIAL),
        "forward_torch": lambda: m(tok32),
        "run_with_cache": lambda: m.run_with_cache(ADVERSARIAL),
        "predict": lambda: m.predict(X, y, xq),
        "predict_batched_torch": lambda: m.predict(torch.as_tensor(X[None]), torch.as_tensor(y[None]),
                                                   torch.as_tensor(xq[None])),
        "predict_prefixes": lambda: m.predict_prefixes(np.concatenate([X, xq[None]]), np.append(y, 0.0)),
        "run_pruned_last": lambda: run_pruned(m, ADVERSARIAL, readout="last"),
        "stream": stream,
    }


def _refused_everywhere(m):
    for name, call in _paths(m).items():
        with pytest.raises(E.PrecisionError):
            call()
            pytest.fail(f"{name} served the adversarial input")


def test_every_path_refuses():
    _refused_everywhere(ridge_model(2, 1.0, torch.float32))


def test_sparse_model_refuses():
    _refused_everywhere(ridge_model(2, 1.0, torch.float32).to_sparse())


def test_saved_and_loaded_model_refuses(tmp_path):
    m = ridge_model(2, 1.0, torch.float32)
    m.save(tmp_path / "r")
    m2 = ic.load(tmp_path / "r")
    assert spec_for(m2.program) == spec_for(m.program)
    _refused_everywhere(m2)


def test_file_saved_without_the_spec_still_refuses(tmp_path):
    """A ridge model whose program meta lacks 'aposteriori' (a file written before the check existed) is
    checked all the same: the spec is derived from meta['circuit'] == 'ridge' and meta['lam']."""
    m = ridge_model(2, 1.0, torch.float32)
    m.save(tmp_path / "r")
    m2 = ic.load(tmp_path / "r")
    m2.program.meta = {k: v for k, v in m2.program.meta.items() if k != "aposteriori"}
    assert spec_for(m2.program)["lam"] == 1.0
    with pytest.raises(E.PrecisionError):
        m2(ADVERSARIAL)


def test_check_false_opts_out_everywhere():
    m = ridge_model(2, 1.0, torch.float32)
    X, y, xq = _xyq()
    assert abs(float(m(ADVERSARIAL, check=False)[0, -1]) + 24.48) < 0.05   # the gain form's unchecked answer
    m.run_with_cache(ADVERSARIAL, check=False)
    m.predict(X, y, xq, check=False)
    m.predict_prefixes(X, y, check=False)
    s = m.stream(check=False)
    for i in range(4):
        s.add(X[i], y[i])
    s.predict(xq)


def test_other_circuits_are_checked_by_recomputation():
    """Every other program is checked by recomputation (numerics/recompute.py, tests/test_recompute.py):
    1e-6 in float64, 1e-2 in float32."""
    m = ic.circuits.sgd(2, 0.01)
    assert spec_for(m.program) == {"kind": "recompute", "accuracy": {"float32": 1e-2, "float64": 1e-6}}
    v = m.verify(encode(np.ones((1, 2, 2)), np.ones((1, 2)), np.ones((1, 2))))
    assert v.kind == "recompute" and v.accuracy == 1e-6 and v.ok.all() and np.isfinite(v.bounds).all()


# ---------------------------------------------------------------------- (e) the message
def test_message_names_the_arguments_to_change():
    m = ridge_model(2, 1.0, torch.float32)
    with pytest.raises(E.PrecisionError) as exc:
        m(ADVERSARIAL)
    msg = str(exc.value)
    assert "lam" in msg and "dtype=torch.float64" in msg and "lam=1" in msg
    assert "1e-02" in msg or "0.01" in msg


def test_patched_pass_is_not_checked_but_read_only_hooks_are():
    """Activation patching (a hook returns a replacement) makes the model compute what the patch says, not
    ridge: that pass is not checked a posteriori. A hook that only reads leaves the check on."""
    m = ic.circuits.ridge(2, 1.0, max_len=17)
    rng = np.random.default_rng(0)
    X, y, xq = rng.standard_normal((1, 3, 2)), rng.standard_normal((1, 3)), rng.standard_normal((1, 2))
    tok = encode(X, y, xq)
    rows = m.layout.rows("wq")
    clean = m(tok)

    def patch(h, name):
        h = h.clone()
        h[:, -1, rows] += 1.0
        return h

    name = f"blocks.{len(m.unrolled(tok.shape[1])) - 1}.hook_resid_mid"
    m.add_hook(name, patch)
    try:
        patched = m(tok)  # served: the patched model is not the circuit
        assert not m.verify(tok).ok[0, -1]  # ... and verify() says its answer is not ridge
        assert abs(patched[0, -1] - clean[0, -1]) > 0.1
    finally:
        m.reset_hooks()
    m32 = ridge_model(2, 1.0, torch.float32)
    seen = []
    m32.add_hook("blocks.0.hook_resid_pre", lambda h, n: seen.append(n))
    try:
        with pytest.raises(E.PrecisionError):
            m32(ADVERSARIAL)
        assert seen
    finally:
        m32.reset_hooks()
