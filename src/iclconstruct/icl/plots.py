"""Figures of the empirical study (Akyürek et al. 2023, Fig. 1, 2, 4–5), one convention with :mod:`iclconstruct.viz`:
built without ``pyplot``; each function returns the :class:`~matplotlib.figure.Figure`, or, given ``path``,
writes it there and returns the path.

* :func:`plot_error_curves` — squared error ÷ d vs number of examples per predictor (Fig. 1).
* :func:`plot_spd_curves` — SPD ÷ d and ILWD ÷ d of the learner to each predictor vs examples (Fig. 1/3).
* :func:`plot_mspd_heatmap` — noise σ² × ridge-λ MSPD table (Fig. 2).
* :func:`plot_probes` — probe error by layer per target and probe kind (Fig. 4–5).
* :func:`plot_probe_alpha` — the probes' learned position weights α, layer × position heat maps.
* :func:`plot_loss` — training loss ÷ d vs step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["plot_error_curves", "plot_spd_curves", "plot_mspd_heatmap", "plot_probes", "plot_probe_alpha", "plot_loss"]


class _Mpl:
    """The two pieces of matplotlib the figures use, without ``pyplot`` (the convention of
    :mod:`iclconstruct.viz`): ``subplots`` on a fresh :class:`~matplotlib.figure.Figure` and
    the named colour maps."""

    @staticmethod
    def subplots(*args, figsize=None, **kw):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*args, **kw)

    @staticmethod
    def get_cmap(name: str):
        import matplotlib

        return matplotlib.colormaps[name]


def _plt() -> _Mpl:
    return _Mpl()


def _save(fig, path, **savefig):
    """The figure itself when ``path`` is None (as :mod:`iclconstruct.viz` returns them); else it is
    written to ``path`` (folders created) and the path is returned."""
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not savefig:
        fig.tight_layout()
    fig.savefig(path, dpi=120, **savefig)
    return path


def plot_error_curves(table, path=None, title=None) -> "Path | Figure":
    """Squared error ÷ d per prefix length, learner and predictors, with bootstrap bands (Fig. 1)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    curves = {table.learner: table.learner_curve, **table.predictor_curves}
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, 20))
    for i, (name, c) in enumerate(curves.items()):
        ks = np.arange(len(c["mean"]))
        lw, ls = (2.5, "-") if i == 0 else (1.2, "--")
        col = "k" if i == 0 else colors[(2 * i) % 20 if i < 11 else (2 * i + 1) % 20]
        ax.plot(ks, c["mean"], ls, lw=lw, label=name, color=col)
        ax.fill_between(ks, c["lo"], c["hi"], alpha=0.12, color=col)
    # keep the learner readable: wild predictors (averaging, k-NN at n = 1) are clipped
    ax.set_ylim(0, 1.6 * float(np.max(table.learner_curve["hi"])))
    ax.axvline(table.d, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("number of in-context examples")
    ax.set_ylabel("squared error / d")
    ax.set_title(title or f"Prediction error (d = {table.d})")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _line_styles(n: int):
    """``n`` distinguishable (colour, dash) pairs: tab10 colours, then the same with dashes."""
    plt = _plt()
    cols = plt.get_cmap("tab10").colors
    dashes = ["-", "--", ":", "-."]
    return [(cols[i % 10], dashes[(i // 10) % 4]) for i in range(n)]


def plot_spd_curves(table, path=None, title=None) -> "Path | Figure":
    """SPD ÷ d (left) and, when computed, ILWD ÷ d (right) between the learner and each predictor
    vs number of examples, log scale, with bootstrap 95 % bands (paper Fig. 1b/3)."""
    plt = _plt()
    has_ilwd = any(np.isfinite(r["ilwd_per_d"]) for r in table.rows)
    panels = [("spd_per_d", "spd_lo", "spd_hi", "SPD / d")]
    if has_ilwd:
        panels.append(("ilwd_per_d", "ilwd_lo", "ilwd_hi", "ILWD / d"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False, sharey=True)
    names = table.predictors()
    styles = _line_styles(len(names))
    for ax, (key, lo_k, hi_k, label) in zip(axes[0], panels):
        for name, (col, ls) in zip(names, styles):
            rs = [r for r in table.rows if r["predictor"] == name and np.isfinite(r[key])]
            if not rs:
                continue
            ks = np.array([r["prefix"] for r in rs])
            ax.plot(ks, np.maximum([r[key] for r in rs], 1e-8), ls, color=col, label=name, lw=1.4)
            lo = np.array([r.get(lo_k, np.nan) for r in rs], float)
            hi = np.array([r.get(hi_k, np.nan) for r in rs], float)
            if np.isfinite(lo).all() and np.isfinite(hi).all():
                ax.fill_between(ks, np.maximum(lo, 1e-8), np.maximum(hi, 1e-8), color=col, alpha=0.15, lw=0)
        ax.set_yscale("log")
        ax.axvline(table.d, color="grey", lw=0.8, ls=":")
        ax.axhline(0.01, color="black", lw=0.6, ls=(0, (1, 3)))
        ax.set_xlabel("number of in-context examples")
        ax.set_ylabel(f"{label} to {table.learner}")
        ax.set_title(f"{label} (dotted: n = d, 0.01)")
    axes[0][-1].legend(fontsize=7, ncol=2, loc="lower left")
    fig.suptitle(title or f"{table.learner} vs predictors (d = {table.d}; bands: 95 % bootstrap CI; values < 1e-8 drawn at 1e-8)")
    return _save(fig, path)


def plot_mspd_heatmap(M, row_labels: Sequence[str], col_labels: Sequence[str], path=None, title=None) -> "Path | Figure":
    """Heat map of MSPD (rows predictors, columns training noise σ²); NaN cells stay blank (Fig. 2)."""
    plt = _plt()
    M = np.asarray(M, float)
    fig, ax = plt.subplots(figsize=(1.3 * M.shape[1] + 2.5, 0.6 * M.shape[0] + 1.8))
    im = ax.imshow(np.log10(np.maximum(M, 1e-12)), cmap="viridis_r", aspect="auto")
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            if np.isfinite(M[i, j]):
                best = np.nanargmin(M[:, j]) == i
                light = im.norm(np.log10(max(M[i, j], 1e-12))) < 0.5  # viridis_r: small values are light
                ax.text(j, i, f"{M[i, j]:.2e}" + (" *" if best else ""), ha="center", va="center", fontsize=8,
                        color="black" if light else "white", fontweight="bold" if best else "normal")
    ax.set_xticks(range(M.shape[1]), [f"σ²={c}" for c in col_labels])
    ax.set_yticks(range(M.shape[0]), list(row_labels))
    fig.colorbar(im, ax=ax, label="log10 MSPD")
    ax.set_title(title or "MSPD: learner trained at σ² vs ridge(λ)  (* = closest)")
    return _save(fig, path)


def plot_probes(results, path=None, title=None, xlabel: str = "layer (0 = embedding)") -> "Path | Figure":
    """Held-out relative probe error by layer: one panel per target, one line per probe kind;
    methods whose name contains "control" are dashed (Fig. 4–5)."""
    plt = _plt()
    targets = sorted({r.target for r in results})
    methods = sorted({r.method for r in results})
    base = sorted({m.split(" (")[0] for m in methods})
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(base)}
    fig, axes = plt.subplots(1, len(targets), figsize=(3.6 * len(targets) + 0.5, 3.8), squeeze=False, sharey=True)
    for ax, tgt in zip(axes[0], targets):
        for m in methods:
            rs = sorted((r for r in results if r.target == tgt and r.method == m), key=lambda r: r.layer)
            if not rs:
                continue
            ctrl = "control" in m
            ax.plot([r.layer for r in rs], [r.test_rel_err for r in rs], "--" if ctrl else "-",
                    marker="o", ms=3, color=colors[m.split(" (")[0]], alpha=0.6 if ctrl else 1.0, label=m)
        layers = sorted({r.layer for r in results})
        ax.set_xticks(layers[:: max(1, -(-len(layers) // 13))])
        ax.set_xlabel(xlabel)
        ax.set_title(tgt)
        ax.set_ylim(0, 1.1)
        ax.axhline(1.0, color="grey", lw=0.6, ls=":")
    axes[0][0].set_ylabel("held-out relative MSE")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.suptitle(title or "Probe error by layer")
    return _save(fig, path)


def plot_probe_alpha(results, n_examples: int, path=None, title=None) -> "Path | Figure":
    """Heat maps of the position probes' learned weights α (rows: layer, columns: token position
    x̃₁, ỹ₁, …, x̃_q), one panel per target (grid rows) and probe kind (grid columns) — where each
    quantity is read from. A flat row means early stopping kept the initial uniform α."""
    plt = _plt()
    rs_all = [r for r in results if r.alpha is not None]
    targets = sorted({r.target for r in rs_all})
    methods = sorted({r.method for r in rs_all})
    T = 2 * n_examples + 1
    fig, axes = plt.subplots(len(targets), len(methods), figsize=(0.3 * T * len(methods) + 2.5, 2.6 * len(targets) + 0.8),
                             squeeze=False)
    labels = [f"{'x' if t % 2 == 0 else 'y'}{t // 2 + 1}" for t in range(2 * n_examples)] + ["xq"]
    vmax = max(float(np.max(r.alpha)) for r in rs_all)
    im = None
    for i, tgt in enumerate(targets):
        for j, m in enumerate(methods):
            ax = axes[i][j]
            rs = sorted((r for r in rs_all if r.target == tgt and r.method == m), key=lambda r: r.layer)
            if not rs:
                ax.axis("off")
                continue
            A = np.stack([r.alpha for r in rs])
            im = ax.imshow(A, cmap="magma_r", vmin=0, vmax=vmax, aspect="auto")
            ax.set_xticks(range(A.shape[1]), labels[: A.shape[1]], fontsize=6, rotation=90)
            ax.set_yticks(range(len(rs)), [str(r.layer) for r in rs], fontsize=7)
            ax.set_xlabel("token position", fontsize=8)
            ax.set_ylabel("layer", fontsize=8)
            ax.set_title(f"{tgt} / {m} probe", fontsize=9)
    fig.subplots_adjust(hspace=0.75, wspace=0.25)
    if im is not None:
        fig.colorbar(im, ax=[a for row in axes for a in row], label="α (softmax over positions)", shrink=0.8)
    fig.suptitle(title or "Probe position weights α")
    return _save(fig, path, bbox_inches="tight")


def plot_loss(history, path=None, title=None) -> "Path | Figure":
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot([h["step"] for h in history], [h["loss_per_d"] for h in history])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss / d_active")
    ax.set_title(title or "Training loss")
    return _save(fig, path)
