"""The capacity sweep (Akyürek et al. 2023, §4.3 and Fig. 3): layers × width, same budget per model.

Every cell of the grid trains one :class:`~iclconstruct.icl.model.ICLTransformer` with the same
data, schedule and step budget (noiseless by default), then measures its SPD ÷ d to a fixed
set of *reference* predictors (one-step GD, ridge(λ) for a few λ, OLS) on the same held-out
tasks, averaged over prefix lengths ``1 … n−1``. The paper's finding: one layer ≈ one-step GD,
2–4 layers ≈ ridge, ≥ 8 layers ≈ OLS; ridge-like behaviour needs width ≥ 16 at d = 8.

Layout of ``out``::

    cells/L{layers}_W{width}/     the cell's training folder (resumed if unfinished) + result.json
    sweep.csv                     one row per finished cell (rebuilt from every result.json)
    sweep.md, sweep.png           table and heat map (closest predictor, SPD ÷ d in each cell)

Re-running skips finished cells, so a sweep can be stopped and restarted, or split over
processes (disjoint ``layers``/``widths`` into the same ``out``). Under ``torchrun`` every rank
trains each cell (DDP) and only rank 0 evaluates and writes.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import OutOfRangeError
from . import predictors as P
from .data import sample_tasks
from .model import ICLTransformer
from .predictors import name_of, predict_prefixes
from .training import train

__all__ = ["reference_predictors", "run_sweep", "reevaluate_sweep", "evaluate_cell", "read_sweep", "plot_sweep", "plot_sweep_lines"]


def reference_predictors(gd_lrs: Sequence[float] = (0.05, 0.1), lams: Sequence[float] = (0.1, 0.5, 1.0)) -> List:
    """The sweep's candidates: one-step GD for each ``gd_lrs``, ridge for each ``lams``, then OLS."""
    return [P.gd(a) for a in gd_lrs] + [P.ridge(l) for l in lams] + [P.ols()]


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def _barrier():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def run_sweep(out, layers: Sequence[int] = (1, 2, 4, 8), widths: Sequence[int] = (16, 32, 64), *, d: int = 4,
              n_heads: int = 1, max_points: Optional[int] = None, steps: int = 4000, batch_size: int = 64,
              lr: float = 1e-3, noise_var: float = 0.0, curriculum="garg", seed: int = 0, n_tasks: int = 1000,
              eval_seed: int = 1234, predictors=None, device=None, progress: bool = False, log=print) -> List[dict]:
    """Train and evaluate every (layers, width) cell not yet finished in ``out``; returns all rows.

    Args:
        layers, widths: the grid. ``n_heads`` must divide every width (paper: one head suffices).
        d, max_points: task dimension and points per sequence (default ``2d + 1``).
        steps, batch_size, lr, curriculum, seed: the budget and schedule, identical for every cell
            (``seed`` seeds each model's initial weights and the training batches).
        n_tasks, eval_seed: held-out tasks for SPD (the same for every cell).
        predictors: reference predictors (default :func:`reference_predictors`).
    """
    out = Path(out)
    for w in widths:
        if w % n_heads:
            raise OutOfRangeError(f"every width must be divisible by n_heads={n_heads}; got width {w}")
    if not layers or not widths:
        raise OutOfRangeError("layers and widths must each list at least one value")
    max_points = max_points or 2 * d + 1
    refs = list(predictors if predictors is not None else reference_predictors())
    rank = _dist()
    tasks = sample_tasks(n_tasks, max_points, d, noise_var=noise_var, seed=eval_seed)
    ref_preds = {name_of(p): predict_prefixes(p, tasks.X, tasks.y) for p in refs}
    for L in layers:
        for W in widths:
            cell = out / "cells" / f"L{L}_W{W}"
            if (cell / "result.json").is_file():
                log(f"sweep: L={L} W={W} already done, skipped")
                continue
            if rank == 0 and not _claim(cell):
                log(f"sweep: L={L} W={W} is being trained by another process ({cell / _LOCK}), skipped")
                continue
            t0 = time.time()
            model = ICLTransformer(d=d, n_layers=L, width=W, n_heads=n_heads, max_points=max_points, seed=seed)
            res = train(model, steps, batch_size=batch_size, lr=lr, noise_var=noise_var, curriculum=curriculum,
                        out_dir=cell, seed=seed, device=device, progress=progress and rank == 0,
                        log_every=max(1, min(100, steps)))
            if rank == 0:
                model = res.model.float().eval()
                row: Dict = dict(layers=L, width=W, heads=n_heads, d=d, steps=steps, params=sum(
                    q.numel() for q in model.parameters()), train_seconds=round(res.seconds, 1),
                    final_loss_per_d=res.history[-1]["loss_per_d"] if res.history else float("nan"))
                row.update(evaluate_cell(model, tasks, ref_preds))
                (cell / "result.json").write_text(json.dumps(row, indent=2) + "\n")
                log(f"sweep: L={L} W={W}: closest {row['closest']} (SPD/d {row['spd/' + row['closest']]:.4g}), "
                    f"{time.time() - t0:.0f} s")
                (cell / _LOCK).unlink(missing_ok=True)
                write_outputs(out, figure=False)
            _barrier()
    return read_sweep(out)


def evaluate_cell(model, tasks, ref_preds: Dict[str, np.ndarray]) -> Dict:
    """SPD ÷ d of ``model`` to each reference prediction (averaged over prefixes ``1 … n−1``), the
    closest reference, and the model's own squared error ÷ d, on the held-out ``tasks``."""
    d = tasks.X.shape[-1]
    ks = list(range(1, tasks.X.shape[1]))
    Lp = model.predict_prefixes(tasks.X, tasks.y)
    spds = {name: float(np.mean((Lp[:, ks] - pp[:, ks]) ** 2) / d) for name, pp in ref_preds.items()}
    row: Dict = {f"spd/{k}": v for k, v in spds.items()}
    row["closest"] = min(spds, key=spds.get)
    row["err_per_d"] = float(np.mean((Lp[:, ks] - tasks.y[:, ks]) ** 2) / d)
    return row


def reevaluate_sweep(out, predictors=None, *, n_tasks: int = 1000, eval_seed: int = 1234, noise_var: float = 0.0,
                     log=print) -> List[dict]:
    """Re-measure every finished cell of ``out`` against ``predictors`` (default
    :func:`reference_predictors`) from its saved weights, without retraining: the training fields of
    each ``result.json`` are kept, the SPD columns, ``closest`` and ``err_per_d`` are replaced."""
    from .checkpoint import load

    out = Path(out)
    refs = list(predictors if predictors is not None else reference_predictors())
    rows = read_sweep(out)
    if not rows:
        raise OutOfRangeError(f"no finished cell under {out}/cells: run the sweep first (same --out)")
    tasks = None
    for r in rows:
        cell = out / "cells" / f"L{r['layers']}_W{r['width']}"
        if tasks is None or tasks.X.shape[-1] != r["d"]:
            mp = load(cell).config.max_points
            tasks = sample_tasks(n_tasks, mp, r["d"], noise_var=noise_var, seed=eval_seed)
            ref_preds = {name_of(p): predict_prefixes(p, tasks.X, tasks.y) for p in refs}
        keep = {k: v for k, v in r.items() if not k.startswith("spd/") and k not in ("closest", "err_per_d")}
        row = dict(keep, **evaluate_cell(load(cell).float().eval(), tasks, ref_preds))
        (cell / "result.json").write_text(json.dumps(row, indent=2) + "\n")
        log(f"sweep: L={r['layers']} W={r['width']}: closest {row['closest']} (SPD/d {row['spd/' + row['closest']]:.4g})")
    return read_sweep(out)


_LOCK = "claimed.pid"


def _claim(cell: Path) -> bool:
    """Atomically mark ``cell`` as ours (a file holding our PID); False if a live process holds it.
    A claim left by a process that no longer runs is taken over (the cell then resumes)."""
    import os

    cell.mkdir(parents=True, exist_ok=True)
    lock = cell / _LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid == os.getpid():
                return True
            alive = True
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                alive = False
            except (PermissionError, OSError):
                alive = pid > 0
            if alive:
                return False
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def read_sweep(out) -> List[dict]:
    """Rows of every finished cell under ``out`` (sorted by layers, width)."""
    rows = [json.loads(p.read_text()) for p in sorted(Path(out).glob("cells/*/result.json"))]
    return sorted(rows, key=lambda r: (r["layers"], r["width"]))


def write_outputs(out, figure: bool = True) -> List[Path]:
    """(Re)write ``sweep.csv``, ``sweep.md`` and (``figure``) ``sweep.png`` from every finished cell."""
    out = Path(out)
    rows = read_sweep(out)
    if not rows:
        return []
    keys = list(rows[0])
    with (out / "sweep.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    names = [k[4:] for k in keys if k.startswith("spd/")]
    md = ["| layers | width | params | closest | " + " | ".join(f"SPD/d {n}" for n in names) + " | error/d |",
          "|---|---|---|---|" + "---|" * len(names) + "---|"]
    for r in rows:
        cells = [(f"**{r['spd/' + n]:.3g}**" if n == r["closest"] else f"{r['spd/' + n]:.3g}") for n in names]
        md.append(f"| {r['layers']} | {r['width']} | {r['params']:,} | {r['closest']} | " + " | ".join(cells)
                  + f" | {r['err_per_d']:.3g} |")
    (out / "sweep.md").write_text("\n".join(md) + "\n")
    files = [out / "sweep.csv", out / "sweep.md"]
    return files + ([plot_sweep(rows, out / "sweep.png"), plot_sweep_lines(rows, out / "sweep_lines.png")]
                    if figure else [])


def plot_sweep_lines(rows: List[dict], path, title: Optional[str] = None) -> Path:
    """The paper's Fig. 3 view: SPD ÷ d to each reference predictor against the number of layers,
    one panel per width (log scale; a lower line is a closer predictor)."""
    from .plots import _plt, _save

    plt = _plt()
    Ws = sorted({r["width"] for r in rows})
    names = [k[4:] for k in rows[0] if k.startswith("spd/")]
    fig, axes = plt.subplots(1, len(Ws), figsize=(3.6 * len(Ws) + 1.8, 3.4), sharey=True, squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, W in zip(axes[0], Ws):
        rs = sorted((r for r in rows if r["width"] == W), key=lambda r: r["layers"])
        Ls = [r["layers"] for r in rs]
        for k, n in enumerate(names):
            ax.plot(Ls, [r["spd/" + n] for r in rs], marker="o", color=colors[k % 10], label=n)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(Ls, [str(L) for L in Ls])
        ax.set_xlabel("layers")
        ax.set_title(f"width {W}")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("SPD/d to the predictor")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    r0 = rows[0]
    fig.suptitle(title or f"Capacity sweep, d = {r0['d']}: SPD/d against depth ({r0['steps']} steps per model)",
                 fontsize=10)
    return _save(fig, path)


def plot_sweep(rows: List[dict], path, title: Optional[str] = None) -> Path:
    """Heat map (paper Fig. 3 analogue): layers × width, colour = the closest reference predictor,
    text = its name and the SPD ÷ d; a second panel shows SPD ÷ d to OLS on a log colour scale."""
    from matplotlib.colors import ListedColormap

    from .plots import _plt, _save

    plt = _plt()
    Ls = sorted({r["layers"] for r in rows})
    Ws = sorted({r["width"] for r in rows})
    names = [k[4:] for k in rows[0] if k.startswith("spd/")]
    cat = np.full((len(Ls), len(Ws)), np.nan)
    ols = np.full((len(Ls), len(Ws)), np.nan)
    fig, axes = plt.subplots(1, 2, figsize=(5.2 + 1.9 * len(Ws) * 2, 1.2 + 0.9 * len(Ls)))
    colors = plt.get_cmap("tab10").colors
    cmap = ListedColormap([colors[i % 10] for i in range(len(names))])
    for r in rows:
        i, j = Ls.index(r["layers"]), Ws.index(r["width"])
        cat[i, j] = names.index(r["closest"])
        ols[i, j] = r.get("spd/OLS", np.nan)
    ax = axes[0]
    ax.imshow(np.ma.masked_invalid(cat), cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, aspect="auto", alpha=0.55)
    for r in rows:
        i, j = Ls.index(r["layers"]), Ws.index(r["width"])
        ax.text(j, i, f"{r['closest']}\nSPD/d {r['spd/' + r['closest']]:.2g}\n(OLS {r.get('spd/OLS', np.nan):.2g})"
                      f"\nerror/d {r.get('err_per_d', np.nan):.2g}",
                ha="center", va="center", fontsize=7.5)
    from matplotlib.patches import Rectangle

    handles = [Rectangle((0, 0), 1, 1, color=cmap(k), alpha=0.55) for k in range(len(names))]
    ax.legend(handles, names, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="closest", title_fontsize=7)
    ax.set_title("closest reference predictor (SPD/d)")
    ax2 = axes[1]
    im = ax2.imshow(np.log10(np.maximum(ols, 1e-6)), cmap="viridis_r", aspect="auto")
    for i in range(len(Ls)):
        for j in range(len(Ws)):
            if np.isfinite(ols[i, j]):
                ax2.text(j, i, f"{ols[i, j]:.2g}", ha="center", va="center", fontsize=8,
                         color="black" if im.norm(np.log10(max(ols[i, j], 1e-6))) < 0.6 else "white")
    fig.colorbar(im, ax=ax2, label="log10 SPD/d to OLS")
    ax2.set_title("SPD/d to OLS")
    for a in axes:
        a.set_xticks(range(len(Ws)), [str(w) for w in Ws])
        a.set_yticks(range(len(Ls)), [str(l) for l in Ls])
        a.set_xlabel("width")
        a.set_ylabel("layers")
    r0 = rows[0]
    fig.suptitle(title or f"Capacity sweep, d = {r0['d']}, {r0['heads']} head(s), {r0['steps']} steps per model "
                          f"(SPD/d averaged over prefixes 1…n−1)", fontsize=10)
    return _save(fig, path)
