"""Probes validated on a compiled circuit, where the contents of every slot are known exactly.

The ridge circuit holds w = (XᵀX + λI)⁻¹Xᵀy in its residual stream (slot ``wq`` at the query
column after the last layer), so a correct probe must decode it with near-zero error; the
layers before any example is processed hold no information about w, so they must not.
"""
import numpy as np

import iclconstruct as ic
from iclconstruct.icl import fit_linear_readout, fit_position_probe, probe_layers


def circuit_states(n_tasks=240, n=6, d=3, lam=0.5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_tasks, n, d))
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((n_tasks, d)))
    xq = rng.standard_normal((n_tasks, d))
    m = ic.circuits.ridge(d, lam)
    _, cache = m.run_with_cache(ic.tokens.encode(X, y, xq), names_filter="*hook_resid_post")
    H = [cache.resid(l).numpy() for l in range(cache.n_layers)]
    return m, H, ic.reference.ridge(X, y, lam), cache


def test_probe_decodes_the_circuit_weight_slot_exactly():
    m, H, w, cache = circuit_states()
    np.testing.assert_allclose(cache.slot("wq", -1)[:, -1].numpy(), w, atol=1e-6)  # ground truth
    res = fit_linear_readout(H[-1], w, column=-1, lam=1e-12)
    assert res.test_rel_err < 1e-9
    first = fit_linear_readout(H[0], w, column=-1, lam=1e-12)  # after the prologue: no example seen yet
    assert first.test_rel_err > 0.5


def test_position_probe_finds_the_right_column_of_the_circuit():
    _, H, w, _ = circuit_states()
    res = fit_position_probe(H[-1], w, hidden="linear", steps=400)
    assert res.test_rel_err < 0.05
    T = H[-1].shape[1]
    assert int(np.argmax(res.alpha)) in (T - 2, T - 1)  # the last ỹ column holds w, the query column wq


def test_probe_layers_runs_on_circuit_states():
    _, H, w, _ = circuit_states(n_tasks=120)
    rows = probe_layers([H[0], H[-1]], {"w_ridge": w}, methods=("readout",))
    # the default readout is ridge-regularised (lam=1e-3), which costs ~1e-6 of shrinkage
    assert [r.layer for r in rows] == [0, 1] and rows[1].test_rel_err < 1e-5 and rows[0].test_rel_err > 0.5


def test_cli_compare_puts_circuits_in_the_same_table(tmp_path, capsys):
    from iclconstruct.cli import main

    out = tmp_path / "cmp"
    assert main(["compare", "--model", "circuit:ridge:0.5", "--d", "3", "--n-tasks", "40", "--out", str(out)]) == 0
    table = (out / "compare.md").read_text()
    first = [ln for ln in table.splitlines() if ln.startswith("| ") and "predictor" not in ln][0]
    assert first.startswith("| Ridge(0.5) |")  # the circuit's own algorithm is its closest predictor
    assert (out / "spd_vs_examples.png").stat().st_size > 0
    assert str(out) in capsys.readouterr().out


def test_cli_probe_pipeline_recovers_the_ridge_circuit_slot(tmp_path):
    """The same `iclconstruct probe` pipeline used on trained learners, run on the ridge circuit whose
    weight slot is known: the last layer decodes w_ridge almost exactly, the first layer does not."""
    import csv

    from iclconstruct.cli import main

    assert main(["probe", "--model", "circuit:ridge:0.5", "--d", "3", "--n-points", "5", "--n-tasks", "160",
                 "--targets", "w_ridge:0.5", "--methods", "readout", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "probes.csv").open()))
    err = {(int(r["layer"]), r["method"]): float(r["test_rel_err"]) for r in rows}
    last = max(l for l, _ in err)
    assert err[(last, "readout")] < 1e-4 and err[(0, "readout")] > 0.5


def test_newton_circuit_slot_when_the_zoo_has_it():
    import pytest

    if not callable(getattr(ic.circuits, "newton", None)):
        pytest.skip("ic.circuits.newton is not built yet")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6, 3))
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((200, 3)))
    xq = rng.standard_normal((200, 3))
    from iclconstruct.icl.probes import circuit_hidden_states

    H = circuit_hidden_states(ic.circuits.newton(3, 3), X, y, xq)
    # the circuit's own weights: 3 Newton steps from its in-context start alpha = 1/(n + tr XᵀX)²
    w = ic.reference.newton(X, y, 3, alpha="trace")
    first, last = fit_linear_readout(H[0], w), fit_linear_readout(H[-1], w)
    assert last.test_rel_err < 0.05 < 0.5 < first.test_rel_err


def test_cli_probe_pipeline_recovers_the_newton_circuit_slot(tmp_path):
    """`iclconstruct probe` on the Newton circuit with its own ground truth (`w_newton:K`): the last
    layer decodes it, the first does not; a malformed K is refused with the target named."""
    import csv

    import pytest

    from iclconstruct.cli import main
    from iclconstruct.errors import OutOfRangeError
    from iclconstruct.icl.probes import probe_target

    assert main(["probe", "--model", "circuit:newton:2", "--d", "2", "--n-points", "4", "--n-tasks", "120",
                 "--targets", "w_newton:2", "--methods", "readout", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "probes.csv").open()))
    err = {int(r["layer"]): float(r["test_rel_err"]) for r in rows}
    assert err[max(err)] < 1e-3 and err[0] > 0.5
    with pytest.raises(OutOfRangeError, match="w_newton:K"):
        probe_target(np.zeros((1, 2, 2)), np.zeros((1, 2)), "w_newton:x")
