"""Pictures of a compiled circuit: layout, residual stream, attention, weights.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (so it
works under any backend, Agg included, and never accumulates open figures); save it with
``fig.savefig("x.png")`` or let Jupyter display it.

* :func:`layout` — which slot lives in which rows, layer by layer, and which rows each
  attention / MLP sublayer reads and writes (the schedule of Lemma 7 made visible).
* :func:`residual` — the residual stream ``H`` (paper Eq. 4: rows = hidden units, columns =
  tokens ``x̃_i, ỹ_i``) after a layer, one heatmap per layer.
* :func:`attention` — attention patterns per head (hard attention of ``mov``, the self head of ``aff``).
* :func:`weights` — one weight matrix of one layer with slot labels on its residual axes.

Rows are labelled by slot: one tick per slot (at its middle), thin lines between slots.
Rows reused by several slots are labelled ``"u|wq"``. Needs matplotlib (``pip install 'iclconstruct[plot]'``).
"""
from __future__ import annotations

import io as _io
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .compiler.hooks import block_hook

__all__ = ["layout", "residual", "attention", "weights", "token_labels", "slot_groups", "INTERNAL_SLOTS"]

#: compiler-internal rows hidden by default in value plots (their ±1e8 entries drown the rest)
INTERNAL_SLOTS = ("anchor", "pair", "bal")

_WHICH = ("W_Q", "W_K", "W_V", "W_O", "OV", "QK", "W_in", "b_in", "W_out", "b_out", "W_E", "W_pos")


_FIGURE = None


def _mpl():
    """``(Figure class, matplotlib.colors)``; the class is a plain Figure that Jupyter shows as PNG."""
    global _FIGURE
    try:
        from matplotlib import colors
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "iclconstruct.viz needs matplotlib; install it with: pip install 'iclconstruct[plot]'"
        ) from exc
    if _FIGURE is None:
        class ShownFigure(Figure):
            """A :class:`~matplotlib.figure.Figure` with ``_repr_png_``: Jupyter displays it as an
            image under any backend (a pyplot-free Figure would otherwise print as text)."""

            def _repr_png_(self):
                buf = _io.BytesIO()
                self.savefig(buf, format="png", dpi=90)
                return buf.getvalue()

        _FIGURE = ShownFigure
    return _FIGURE, colors


# ---------------------------------------------------------------------- labels
def token_labels(T: int) -> List[str]:
    """Column labels of the paper's layout (Eq. 12): ``x̃_1, ỹ_1, …, x̃_n, ỹ_n`` and ``x̃_q`` if ``T`` is odd."""
    out = [("x̃" if j % 2 == 0 else "ỹ") + f"_{j // 2 + 1}" for j in range(T)]
    if T % 2 == 1:
        out[-1] = "x̃_q"
    return out


def _names_of_row(label: str) -> Tuple[str, ...]:
    return tuple(re.sub(r"\[\d+\]$", "", part) for part in label.split("|")) if label else ("(pad)",)


def slot_groups(model, rows: Optional[Sequence[int]] = None) -> List[Tuple[str, int, int]]:
    """``(label, first, stop)`` for runs of consecutive displayed rows owned by the same slot(s).

    ``first``/``stop`` index into ``rows`` (default: all ``d_model`` rows). Labels are slot
    names; rows reused after a ``free`` read ``"a|b"``; padding rows read ``"(pad)"``.
    """
    labels = list(model.row_labels)
    rows = list(range(len(labels))) if rows is None else list(rows)
    groups: List[Tuple[str, int, int]] = []
    for i, r in enumerate(rows):
        name = "|".join(_names_of_row(labels[r]))
        if groups and groups[-1][0] == name and groups[-1][2] == i and (i == 0 or rows[i - 1] == r - 1):
            groups[-1] = (name, groups[-1][1], i + 1)
        else:
            groups.append((name, i, i + 1))
    return groups


def _shown_rows(model, hide: Sequence[str]) -> List[int]:
    hidden = set()
    for name in hide:
        if name in model.layout:
            hidden |= set(model.layout.rows(name))
    return [r for r in range(model.d_model) if r not in hidden]


def _label_axis(ax, groups, axis: str = "y", fontsize: float = 7.0, lines: bool = True) -> None:
    ticks = [(a + b - 1) / 2 for _, a, b in groups]
    names = [g for g, _, _ in groups]
    if axis == "y":
        ax.set_yticks(ticks)
        ax.set_yticklabels(names, fontsize=fontsize)
    else:
        ax.set_xticks(ticks)
        ax.set_xticklabels(names, fontsize=fontsize, rotation=90)
    if lines:
        for _, a, _ in groups[1:]:
            (ax.axhline if axis == "y" else ax.axvline)(a - 0.5, color="0.6", lw=0.4)


def _norm(colors, values: np.ndarray):
    vmax = float(np.nanmax(np.abs(values))) if values.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    return colors.SymLogNorm(linthresh=max(vmax * 1e-6, 1e-3), vmin=-vmax, vmax=vmax, base=10)


def _run_layers(model, T: Optional[int]) -> List[Tuple[str, int]]:
    """``(column title, block index)`` for distinct layers (``T=None``) or the run on ``T`` tokens."""
    if T is None:
        return [(f"L{b}", b) for b in range(len(model.blocks))]
    return [(f"{l} (L{b})", b) for l, b in enumerate(model.unrolled(T))]


def _layer_index(model, layer: int, T: int) -> int:
    n = len(model.unrolled(T))
    if not -n <= layer < n:
        from .errors import ShapeError

        raise ShapeError(f"layer {layer} out of range: these tokens run {n} layers (0 … {n - 1}, or negative from the end)")
    return layer % n


# ---------------------------------------------------------------------- layout
def _sublayer_rows(model, block: int) -> Tuple[set, set, set, set]:
    """Rows read and written by the attention and the MLP sublayer of block ``block``.

    From the layer's full footprint (:meth:`LayerPlan.reads`, :meth:`LayerPlan.writes`): the
    ops' slots plus what the compiler adds (position units read by hard attention, the
    set-up of ``div`` layers (Lemma 8) and anchor resets).
    """
    lay = model.layout
    plan = model.plans[block]
    rows = lambda names: {r for n in names for r in lay.rows(n)}
    return rows(plan.reads("attn")), rows(plan.writes("attn")), rows(plan.reads("mlp")), rows(plan.writes("mlp"))


def _slot_lifetimes(model, plans) -> Dict[str, Tuple[int, int]]:
    """First and last column (sublayer index) at which each slot is live, from its reads and writes."""
    lay = model.layout
    from .lang.layout import INPUT_SLOTS, SYSTEM_SLOTS

    n_cols = 2 * len(plans)
    life: Dict[str, List[int]] = {}
    for l, plan in enumerate(plans):
        for col, ops in ((2 * l, plan.attn_ops), (2 * l + 1, plan.mlp_ops)):
            for op in ops:
                w = op.writes()
                life.setdefault(w, [col, col])
                life[w][1] = max(life[w][1], col)
                for r in op.reads():
                    if r in life:
                        life[r][1] = max(life[r][1], col)
                    else:  # read before written in this view (loop-carried or an input)
                        life[r] = [0, col]
    for s in lay.slots():
        if s.name in INPUT_SLOTS or s.name in SYSTEM_SLOTS:
            life[s.name] = [0, n_cols - 1]
    ro = model.program.readout_slot
    if ro in life:
        life[ro][1] = n_cols - 1
    return {k: (v[0], v[1]) for k, v in life.items()}


def layout(model, T: Optional[int] = None, *, figsize=None):
    """The residual-stream layout, layer by layer, with what each sublayer reads and writes.

    Rows are the ``d_model`` hidden units, grouped and labelled by slot; columns are the
    attention (``a``) and MLP (``m``) sublayers of the distinct layers (a weight-tied loop
    body once) or, with ``T=``, of every layer run on ``T`` tokens. A cell is tinted with its
    slot's colour while the slot is live (from its first write to its last read), so rows
    reused after a ``free`` change colour; ``●`` marks rows read and ``■`` rows written by
    that sublayer (compiler set-up of ``div`` layers included: Lemma 8's ``pair`` rows).
    """
    Figure, colors = _mpl()
    runs = _run_layers(model, T)
    plans = [model.plans[b] for _, b in runs]
    lay = model.layout
    D = model.d_model
    life = _slot_lifetimes(model, plans)
    palette = [colors.to_rgb(c) for c in ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                          "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")]
    img = np.ones((D, 2 * len(plans), 3))
    for i, s in enumerate(lay.slots()):
        first, last = life.get(s.name, (None, None))
        if first is None:
            continue
        col = np.array(palette[i % len(palette)])
        img[lay.slice(s.name), first:last + 1] = 0.55 + 0.45 * col  # pale tint while live
    reads, writes = [], []
    for l, (_, b) in enumerate(runs):
        a_r, a_w, m_r, m_w = _sublayer_rows(model, b)
        for c, R, W in ((2 * l, a_r, a_w), (2 * l + 1, m_r, m_w)):
            reads += [(c, r) for r in sorted(R)]
            writes += [(c, r) for r in sorted(W)]
    fig = Figure(figsize=figsize or (min(3 + 0.45 * 2 * len(plans), 24), max(3.5, 0.16 * D + 1.5)), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(img, aspect="auto", interpolation="nearest")
    if writes:
        c, r = zip(*writes)
        ax.scatter(c, r, marker="s", s=22, color="k", label="written")
    if reads:
        c, r = zip(*reads)
        ax.scatter(c, r, marker="o", s=9, facecolors="white", edgecolors="k", linewidths=0.6, label="read")
    _label_axis(ax, slot_groups(model))
    ax.set_xticks(range(2 * len(plans)))
    ax.set_xticklabels([f"{t} {s}" for t, _ in runs for s in ("a", "m")], rotation=90, fontsize=7)
    for l in range(1, len(plans)):
        ax.axvline(2 * l - 0.5, color="0.3", lw=0.6)
    ax.set_xlim(-0.5, 2 * len(plans) - 0.5)
    ax.set_ylim(D - 0.5, -0.5)
    ax.set_ylabel("residual rows (slots)")
    ax.set_xlabel("sublayer (a = attention, m = MLP)")
    what = "distinct layers" if T is None else f"run on T = {T} tokens"
    ax.set_title(f"{model.program.name}: layout, {what}", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return fig


# ---------------------------------------------------------------------- activations
def _cache(model, tokens, names):
    _, cache = model.run_with_cache(tokens, names_filter=names, check=False)
    return cache


def residual(model, tokens, layer: Union[int, Sequence[int]] = -1, *, where: str = "post", batch: int = 0,
             hide: Sequence[str] = INTERNAL_SLOTS, figsize=None):
    """Heatmap(s) of the residual stream of one forward pass on ``tokens``.

    Args:
        layer: run-layer index (``-1`` = last) or a list of them — one panel each. Use
            ``where="pre"`` with ``layer=0`` for the embedding.
        where: ``"post"`` (after the layer), ``"mid"`` (after its attention) or ``"pre"``.
        batch: which sequence of the batch.
        hide: slots left out (default the compiler's ``anchor``/``pair``/``bal`` rows, whose
            ``±1e8`` entries would set the colour scale).

    Rows carry slot names, columns the token labels ``x̃_i, ỹ_i``; the colour scale is
    symmetric-logarithmic, so both ``1e-3`` and ``1e3`` entries stay visible.
    """
    Figure, colors = _mpl()
    if where not in ("pre", "mid", "post"):
        from .errors import ShapeError

        raise ShapeError(f"where must be 'pre', 'mid' or 'post'; got {where!r}")
    tok = np.asarray(tokens) if not hasattr(tokens, "detach") else tokens
    T = tok.shape[-2]
    layers = [layer] if isinstance(layer, (int, np.integer)) else list(layer)
    layers = [_layer_index(model, int(l), T) for l in layers]
    cache = _cache(model, tokens, [block_hook(l, f"hook_resid_{where}") for l in layers])
    rows = _shown_rows(model, hide)
    mats = [cache[block_hook(l, f"hook_resid_{where}")][batch].double().numpy()[:, rows].T for l in layers]
    norm = _norm(colors, np.stack(mats))
    fig = Figure(figsize=figsize or (min(2.2 + (0.32 * T + 1.2) * len(layers), 26), max(3.5, 0.16 * len(rows) + 1.8)), layout="constrained")
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    unrolled = model.unrolled(T)
    groups = slot_groups(model, rows)
    for ax, l, M in zip(axes, layers, mats):
        im = ax.imshow(M, aspect="auto", interpolation="nearest", cmap="RdBu_r", norm=norm)
        _label_axis(ax, groups)
        ax.set_xticks(range(T))
        ax.set_xticklabels(token_labels(T), rotation=90, fontsize=7)
        ax.set_title(f"layer {l} (block {unrolled[l]}), {where}", fontsize=9)
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="value (symlog)")
    return fig


def attention(model, tokens, layer: int = 0, *, batch: int = 0, figsize=None):
    """Attention patterns of run-layer ``layer``, one panel per head that the layer uses.

    Rows are queries, columns keys, both labelled ``x̃_i, ỹ_i``; titles are the heads'
    labels (``self``: the self head of ``aff``/offset-0 ``mov``; ``mov t-k``: hard attention
    ``k`` columns back; ``mean``: the RAW averaging read). Layers without heads get a note.
    """
    Figure, _ = _mpl()
    tok = np.asarray(tokens) if not hasattr(tokens, "detach") else tokens
    T = tok.shape[-2]
    l = _layer_index(model, int(layer), T)
    block = model.blocks[model.unrolled(T)[l]]
    labels = list(block.attn.head_labels)
    name = block_hook(l, "attn.hook_pattern")
    pat = _cache(model, tokens, [name])[name][batch]
    n = max(1, len(labels))
    fig = Figure(figsize=figsize or (min(0.9 + (0.28 * T + 1.0) * n, 26), 0.28 * T + 1.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    tl = token_labels(T)
    if not labels:
        axes[0].text(0.5, 0.5, f"layer {l}: attention unused\n(no heads; the sublayer adds 0)",
                     ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_xticks([]); axes[0].set_yticks([])
        return fig
    for h, (ax, name) in enumerate(zip(axes, labels)):
        im = ax.imshow(pat[h].double().numpy(), vmin=0.0, vmax=1.0, cmap="Blues", interpolation="nearest")
        ax.set_xticks(range(T)); ax.set_xticklabels(tl, rotation=90, fontsize=7)
        ax.set_yticks(range(T)); ax.set_yticklabels(tl, fontsize=7)
        ax.set_title(f"layer {l}, head {h}: {name}", fontsize=9)
        ax.set_xlabel("key"); ax.set_ylabel("query")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="attention weight")
    return fig


# ---------------------------------------------------------------------- weights
def _unit_groups(labels: Sequence[str], n: int) -> List[Tuple[str, int, int]]:
    """MLP units grouped by the slot they write (from the unit labels); unused units as ``(off)``."""
    groups: List[Tuple[str, int, int]] = []
    for i in range(n):
        m = re.match(r"[^\[\s]+", labels[i]) if i < len(labels) else None
        name = m.group(0) if m else "(off)"
        if groups and groups[-1][0] == name:
            groups[-1] = (name, groups[-1][1], i + 1)
        else:
            groups.append((name, i, i + 1))
    return groups


def weights(model, layer: int = 0, which: str = "W_in", *, head: Optional[int] = None,
            hide: Sequence[str] = INTERNAL_SLOTS, figsize=None):
    """One weight matrix of distinct layer ``layer`` (``model.blocks[layer]``), slot-labelled.

    ``which``: ``"W_Q"``, ``"W_K"``, ``"W_V"`` (``d_model × d_head`` per head), ``"W_O"``
    (``d_head × d_model``), ``"OV"`` (``W_V W_O``: what a head copies from which slot to which,
    ``d_model × d_model``), ``"QK"`` (``W_Q W_Kᵀ``), ``"W_in"`` (``d_model × d_mlp``),
    ``"W_out"``, ``"b_in"``, ``"b_out"``, ``"W_E"``, ``"W_pos"`` (``layer`` ignored for the last
    two). Per-head matrices get one panel per used head (or only ``head=``). Residual axes
    are labelled by slot; MLP-unit axes by the slot each unit writes.
    """
    Figure, colors = _mpl()
    if which not in _WHICH:
        from .errors import ICLConstructError

        raise ICLConstructError(f"which must be one of {', '.join(_WHICH)}; got {which!r}")
    if which not in ("W_E", "W_pos") and not -len(model.blocks) <= layer < len(model.blocks):
        from .errors import ShapeError

        raise ShapeError(f"layer {layer} out of range: the model has {len(model.blocks)} distinct layers")
    rows = _shown_rows(model, hide)
    rgroups = slot_groups(model, rows)
    panels: List[Tuple[str, np.ndarray, object, object]] = []  # title, matrix, y groups/labels, x groups/labels
    if which in ("W_E", "W_pos"):
        M = getattr(model, which).detach().double().numpy()[:, rows]
        if which == "W_E":
            ylab = ["y"] + [f"x[{i}]" for i in range(model.d)]
        else:  # the first columns' position embeddings
            M = M[: min(len(M), 2 * model.d + 5)]
            ylab = token_labels(len(M))
        panels.append((which, M, ylab, rgroups))
    else:
        blk = model.blocks[layer]
        if which.startswith("W_") and which[2:] in ("Q", "K", "V", "O") or which in ("OV", "QK"):
            att = blk.attn
            used = range(len(att.head_labels)) if head is None else [head]
            for h in used:
                WQ, WK, WV, WO = (getattr(att, k)[h].detach().double().numpy() for k in ("W_Q", "W_K", "W_V", "W_O"))
                name = att.head_labels[h] if h < len(att.head_labels) else "unused"
                t = f"layer {layer}, head {h} ({name}): {which}"
                if which == "OV":
                    panels.append((t, (WV @ WO)[np.ix_(rows, rows)], rgroups, rgroups))
                elif which == "QK":
                    panels.append((t, (WQ @ WK.T)[np.ix_(rows, rows)], rgroups, rgroups))
                elif which == "W_O":
                    panels.append((t, WO[:, rows], None, rgroups))
                else:
                    panels.append((t, {"W_Q": WQ, "W_K": WK, "W_V": WV}[which][rows], rgroups, None))
        else:
            mlp = blk.mlp
            ug = _unit_groups(mlp.unit_labels, model.d_mlp)
            t = f"layer {layer}: MLP {which}"
            if which == "W_in":
                panels.append((t, mlp.W_in.detach().double().numpy()[rows], rgroups, ug))
            elif which == "W_out":
                panels.append((t, mlp.W_out.detach().double().numpy()[:, rows], ug, rgroups))
            elif which == "b_in":
                panels.append((t, mlp.b_in.detach().double().numpy()[None, :], ["b_in"], ug))
            else:
                panels.append((t, mlp.b_out.detach().double().numpy()[rows][:, None], rgroups, ["b_out"]))
    if not panels:
        fig = Figure(figsize=figsize or (4, 2), layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, f"layer {layer}: no attention heads", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([]); ax.set_yticks([])
        return fig
    h0, w0 = panels[0][1].shape
    fig = Figure(figsize=figsize or (min(2.5 + (0.1 * w0 + 1.5) * len(panels), 28), max(3.0, min(0.13 * h0 + 1.8, 30))), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, M, yl, xl) in zip(axes, panels):
        im = ax.imshow(M, aspect="auto", interpolation="nearest", cmap="RdBu_r", norm=_norm(colors, M))
        for axis, spec, n in (("y", yl, M.shape[0]), ("x", xl, M.shape[1])):
            if spec is None:
                (ax.set_yticks if axis == "y" else ax.set_xticks)(range(n))
                (ax.set_yticklabels if axis == "y" else ax.set_xticklabels)([str(i) for i in range(n)], fontsize=6)
            elif isinstance(spec[0], str):
                (ax.set_yticks if axis == "y" else ax.set_xticks)(range(len(spec)))
                (ax.set_yticklabels if axis == "y" else ax.set_xticklabels)(spec, fontsize=7)
            else:
                _label_axis(ax, spec, axis=axis, fontsize=6 if axis == "x" else 7)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig
