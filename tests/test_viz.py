"""iclconstruct.viz: every picture renders to PNG under Agg and labels its residual axes by slot."""
import numpy as np
import pytest

pytest.importorskip("matplotlib")

import iclconstruct as ic  # noqa: E402
from iclconstruct import viz  # noqa: E402
from iclconstruct.errors import ICLConstructError  # noqa: E402


@pytest.fixture(scope="module")
def ridge():
    return ic.circuits.ridge(2, 0.5, max_len=17)


@pytest.fixture(scope="module")
def ridge_by_hand():
    """The hand-written ridge program: its slot sharing (``u|wq``) is placed by hand, so label tests that name
    shared rows use it (the front-end circuit's liveness allocation shares other rows)."""
    from iclconstruct.circuits.ridge import ridge_program_by_hand

    return ic.compile(ridge_program_by_hand(2, 0.5), max_len=17)


@pytest.fixture(scope="module")
def tokens():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 3, 2))
    return ic.tokens.encode(X, X.sum(-1), rng.standard_normal((2, 2)))


def _slot_names(model):
    return {s.name for s in model.layout.slots()}


def _is_slot_label(model, label):
    return all(part in _slot_names(model) for part in label.split("|"))


def _ticks(ax, axis="y"):
    labels = ax.get_yticklabels() if axis == "y" else ax.get_xticklabels()
    return [t.get_text() for t in labels]


def _render(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=40)
    assert path.stat().st_size > 1000
    return fig


def test_layout_distinct_layers(ridge_by_hand, tmp_path):
    ridge = ridge_by_hand
    fig = _render(viz.layout(ridge), tmp_path, "layout")
    ax = fig.axes[0]
    ticks = _ticks(ax)
    assert all(_is_slot_label(ridge, t) for t in ticks)
    assert {"x", "y", "Ainv", "w", "u|wq", "pred", "anchor", "pair"} <= set(ticks)
    assert len(_ticks(ax, "x")) == 2 * ridge.n_layers_unique


def test_layout_unrolled_run(ridge, tmp_path):
    fig = _render(viz.layout(ridge, T=7), tmp_path, "layout_T")
    assert len(_ticks(fig.axes[0], "x")) == 2 * len(ridge.unrolled(7))


def test_layout_marks_reads_and_writes_from_the_plans(ridge):
    a_r, a_w, m_r, m_w = viz._sublayer_rows(ridge, 3)  # the div layer of the loop body
    lay = ridge.layout
    assert set(lay.rows("pair")) <= a_w and set(lay.rows("c")) <= a_r
    assert set(lay.rows("Ainv")) <= m_w and set(lay.rows("O")) <= m_r


def test_residual_labels_rows_by_slot_and_columns_by_token(ridge_by_hand, tokens, tmp_path):
    ridge = ridge_by_hand
    fig = _render(viz.residual(ridge, tokens, layer=[0, -1]), tmp_path, "residual")
    heat = [ax for ax in fig.axes if ax.get_title().startswith("layer")]
    assert len(heat) == 2
    for ax in heat:
        ticks = _ticks(ax)
        assert all(_is_slot_label(ridge, t) for t in ticks)
        assert {"x", "y", "Ainv", "w", "pred"} <= set(ticks)
        assert not {"anchor", "pair", "bal"} & set(ticks)  # hidden by default
        assert _ticks(ax, "x") == ["x̃_1", "ỹ_1", "x̃_2", "ỹ_2", "x̃_3", "ỹ_3", "x̃_q"]


def test_residual_embedding_and_all_rows(ridge, tokens, tmp_path):
    fig = _render(viz.residual(ridge, tokens, layer=0, where="pre", hide=()), tmp_path, "embed")
    assert "anchor" in _ticks(fig.axes[0])


def test_attention_heads_with_token_labels(ridge, tokens, tmp_path):
    fig = _render(viz.attention(ridge, tokens, layer=1), tmp_path, "attention")
    heads = [ax for ax in fig.axes if "head" in ax.get_title()]
    assert len(heads) == len(ridge.blocks[1].attn.head_labels) == 2
    assert "mov t-2" in heads[1].get_title()
    assert _ticks(heads[0], "x")[-1] == "x̃_q" and _ticks(heads[0])[1] == "ỹ_1"


def test_attention_of_a_layer_without_heads(ridge, tokens, tmp_path):
    _render(viz.attention(ridge, tokens, layer=2), tmp_path, "no_heads")


@pytest.mark.parametrize("which", ["W_in", "W_out", "W_Q", "W_K", "W_V", "W_O", "OV", "QK", "b_in", "b_out",
                                   "W_E", "W_pos"])
def test_weights_render_with_slot_labels(ridge, which, tmp_path):
    fig = _render(viz.weights(ridge, layer=1, which=which), tmp_path, which)
    ax = fig.axes[0]
    residual_axes = {"W_in": "y", "W_Q": "y", "W_K": "y", "W_V": "y", "OV": "xy", "QK": "xy", "b_out": "y",
                     "W_out": "x", "W_O": "x", "W_E": "x", "W_pos": "x"}.get(which, "")
    for axis in residual_axes:
        ticks = _ticks(ax, axis)
        assert ticks and all(_is_slot_label(ridge, t) for t in ticks), (which, axis, ticks)
    if which == "W_in":
        assert {"u", "r"} <= set(_ticks(ax, "x"))  # MLP units grouped by the slot they write


def test_bad_arguments_raise(ridge, tokens):
    with pytest.raises(ICLConstructError, match="which must be one of"):
        viz.weights(ridge, which="W_X")
    with pytest.raises(ICLConstructError, match="out of range"):
        viz.residual(ridge, tokens, layer=99)
    with pytest.raises(ICLConstructError, match="where"):
        viz.residual(ridge, tokens, where="after")


def test_token_labels():
    assert viz.token_labels(4) == ["x̃_1", "ỹ_1", "x̃_2", "ỹ_2"]
    assert viz.token_labels(3) == ["x̃_1", "ỹ_1", "x̃_q"]


def test_lazy_attribute():
    assert ic.viz is viz
