"""Compare a learner (trained model, circuit, any predictor) against classical predictors
per prefix length (Akyürek et al. 2023, §4.1–4.3, Fig. 1–3).

:func:`compare` returns a :class:`ComparisonTable` with one row per (predictor, prefix length):
SPD ÷ d with a bootstrap CI, ILWD ÷ d, the learner's and the predictor's squared error ÷ d,
and R² of the learner's implicit linear fit. :func:`mspd_table` builds the paper's noise ×
ridge-λ MSPD table (Fig. 2) from several learners.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import OutOfRangeError
from .data import Tasks
from .metrics import bootstrap_ci, implicit_weights, mspd
from .predictors import as_predictor, default_predictors, name_of, predict_prefixes

__all__ = ["ComparisonTable", "compare", "compare_many", "ranking_markdown", "mspd_table"]

_COLS = ["learner", "predictor", "prefix", "spd_per_d", "spd_lo", "spd_hi", "ilwd_per_d", "ilwd_lo", "ilwd_hi",
         "learner_err_per_d", "predictor_err_per_d", "learner_r2"]


@dataclass
class ComparisonTable:
    """Rows of per-prefix metrics; ``learner`` is the compared model's name, ``d`` the dimension."""

    learner: str
    d: int
    rows: List[Dict] = field(default_factory=list)
    learner_curve: Optional[Dict[str, np.ndarray]] = None  # error ÷ d per prefix: mean, lo, hi
    predictor_curves: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)

    def predictors(self) -> List[str]:
        seen: List[str] = []
        for r in self.rows:
            if r["predictor"] not in seen:
                seen.append(r["predictor"])
        return seen

    def column(self, predictor: str, key: str, prefixes: Optional[Sequence[int]] = None) -> np.ndarray:
        rs = [r for r in self.rows if r["predictor"] == predictor and (prefixes is None or r["prefix"] in prefixes)]
        return np.array([r[key] for r in rs], dtype=np.float64)

    def summary(self, prefixes: Optional[Sequence[int]] = None, key: str = "spd_per_d") -> List[tuple]:
        """``[(predictor, mean of key over prefixes), …]`` sorted ascending (closest first).

        Default prefixes: ``1 … 2d`` (the paper's headline range).
        """
        if prefixes is None:
            prefixes = range(1, 2 * self.d + 1)
        prefixes = list(prefixes)
        out = []
        for p in self.predictors():
            col = self.column(p, key, prefixes)
            out.append((p, float(np.mean(col[np.isfinite(col)])) if np.isfinite(col).any() else float("nan")))
        return sorted(out, key=lambda t: (not np.isfinite(t[1]), t[1]))

    def closest(self, prefixes: Optional[Sequence[int]] = None, key: str = "spd_per_d") -> str:
        return self.summary(prefixes, key)[0][0]

    def to_csv(self, path) -> Path:
        path = Path(path)
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=_COLS)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: (self.learner if k == "learner" else r[k]) for k in _COLS})
        return path

    def to_markdown(self, prefixes: Optional[Sequence[int]] = None) -> str:
        """Markdown: summary (mean over prefixes) then SPD ÷ d per prefix per predictor."""
        summ = self.summary(prefixes)
        ilwd = dict(self.summary(prefixes, "ilwd_per_d"))
        lines = [f"Learner: **{self.learner}** (d = {self.d}); means over prefix lengths "
                 f"{'1…' + str(2 * self.d) if prefixes is None else list(prefixes)}", "",
                 "| predictor | SPD/d | ILWD/d |", "|---|---|---|"]
        def fmt(v):
            return f"{v:.4g}" if np.isfinite(v) else "–"

        lines += [f"| {p} | {fmt(v)} | {fmt(ilwd.get(p, float('nan')))} |" for p, v in summ]
        ks = sorted({r["prefix"] for r in self.rows})
        lines += ["", "SPD/d per prefix length:", "",
                  "| predictor | " + " | ".join(str(k) for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for p in self.predictors():
            lines.append(f"| {p} | " + " | ".join(f"{v:.3g}" for v in self.column(p, "spd_per_d")) + " |")
        return "\n".join(lines) + "\n"


def compare(model_or_circuit, tasks: Tasks, predictors=None, *, name: Optional[str] = None,
            n_probe: int = 0, n_boot: int = 500, seed: int = 0, prefixes: Optional[Sequence[int]] = None
            ) -> ComparisonTable:
    """SPD/ILWD of ``model_or_circuit`` against every predictor at every prefix length.

    Args:
        model_or_circuit: anything with ``predict(X, y, x_query)`` (``predict_prefixes`` is used if present).
        tasks: evaluation tasks; prefix ``k`` predicts ``y_{k+1}`` from the first ``k`` examples.
        predictors: classical predictors (default :func:`default_predictors` for the tasks' noise);
            other learners (models, circuits) may be listed too and are ranked alongside.
        n_probe: probe inputs per task for ILWD / R² (0 disables them: faster; needs ``>= d``).
        prefixes: prefix lengths for ILWD (default ``1 … n−1``). ``k = 0`` is left out by default:
            with no example every classical predictor's weight is 0, so ILWD there only measures
            the learner's bias, and circuits refuse an empty context. SPD is computed for all ``k``.
    """
    learner = as_predictor(model_or_circuit, name)
    preds = [as_predictor(p) for p in (predictors if predictors is not None else
                                        default_predictors(tasks.noise_var, tasks.prior_var))]
    d, n = tasks.d, tasks.n_points
    if n_probe and n_probe < d:
        raise OutOfRangeError(f"n_probe must be 0 (off) or >= d = {d}; got {n_probe}")
    L = predict_prefixes(learner, tasks.X, tasks.y)
    table = ComparisonTable(learner=name_of(learner), d=d)
    m, lo, hi = bootstrap_ci((L - tasks.y) ** 2 / d, n_boot=n_boot, seed=seed)
    table.learner_curve = dict(mean=m, lo=lo, hi=hi)
    ks_probe = set(range(1, n) if prefixes is None else prefixes)
    w_learner = {}
    if n_probe:
        for k in sorted(ks_probe):
            w_learner[k] = implicit_weights(learner, tasks.X[:, :k], tasks.y[:, :k], n_probe, seed)
    for p in preds:
        P = predict_prefixes(p, tasks.X, tasks.y)
        s_mean, s_lo, s_hi = bootstrap_ci((L - P) ** 2 / d, n_boot=n_boot, seed=seed)
        e_mean, e_lo, e_hi = bootstrap_ci((P - tasks.y) ** 2 / d, n_boot=n_boot, seed=seed)
        table.predictor_curves[name_of(p)] = dict(mean=e_mean, lo=e_lo, hi=e_hi)
        for k in range(n):
            il, il_lo, il_hi, r2 = float("nan"), float("nan"), float("nan"), float("nan")
            if n_probe and k in ks_probe:
                wl, r2s = w_learner[k]
                wp, _ = implicit_weights(p, tasks.X[:, :k], tasks.y[:, :k], n_probe, seed)
                il_m, il_l, il_h = bootstrap_ci(np.sum((wl - wp) ** 2, axis=1) / d, n_boot=n_boot, seed=seed)
                il, il_lo, il_hi = float(il_m), float(il_l), float(il_h)
                r2 = float(np.mean(r2s))
            table.rows.append(dict(predictor=name_of(p), prefix=k, spd_per_d=float(s_mean[k]), spd_lo=float(s_lo[k]),
                                   spd_hi=float(s_hi[k]), ilwd_per_d=il, ilwd_lo=il_lo, ilwd_hi=il_hi,
                                   learner_err_per_d=float(m[k]), predictor_err_per_d=float(e_mean[k]),
                                   learner_r2=r2))
    return table


def compare_many(learners: Sequence, tasks: Tasks, predictors=None, *, n_probe: int = 0, n_boot: int = 500,
                 seed: int = 0) -> List[ComparisonTable]:
    """One :class:`ComparisonTable` per learner; each learner is compared with the classical
    ``predictors`` **and every other learner** (trained models and circuits in one ranking).

    ``learners`` are objects with ``predict`` (named via ``.name``); names must be distinct.
    """
    ls = [as_predictor(x) for x in learners]
    names = [name_of(x) for x in ls]
    if len(set(names)) != len(names):
        raise OutOfRangeError(f"learners must have distinct names to be ranked together; got {names}")
    classical = list(predictors if predictors is not None else default_predictors(tasks.noise_var, tasks.prior_var))
    return [compare(x, tasks, classical + [o for o in ls if o is not x], n_probe=n_probe, n_boot=n_boot, seed=seed)
            for x in ls]


def ranking_markdown(tables: Sequence[ComparisonTable], key: str = "spd_per_d",
                     prefixes: Optional[Sequence[int]] = None) -> str:
    """Markdown matrix: one column per learner, one row per predictor or other learner, cells the
    mean of ``key`` over ``prefixes`` (default ``1 … 2d``); the closest row per column in bold."""
    cols = [t.learner for t in tables]
    summaries = [dict(t.summary(prefixes, key)) for t in tables]
    rows: List[str] = []
    for t in tables:
        for p in t.predictors():
            if p not in rows:
                rows.append(p)
    best = [min(sm, key=lambda k: (not np.isfinite(sm[k]), sm[k])) for sm in summaries]
    label = {"spd_per_d": "SPD/d", "ilwd_per_d": "ILWD/d"}.get(key, key)
    d = tables[0].d
    rng = f"1…{2 * d}" if prefixes is None else str(list(prefixes))
    lines = [f"{label} of each learner (column) to each predictor (row), mean over prefix lengths {rng}; "
             "bold = closest in the column", "",
             "| predictor | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c, sm, b in zip(cols, summaries, best):
            v = sm.get(r)
            if r == c or v is None:
                cells.append("·")
            elif not np.isfinite(v):
                cells.append("–")
            else:
                cells.append(f"**{v:.4g}**" if r == b else f"{v:.4g}")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def mspd_table(learners: Dict[float, object], lams: Sequence[float], d: int, n_tasks: int = 1000,
               prior_var: float = 1.0, seed: int = 0):
    """The paper's Fig. 2 table: MSPD(learner trained at σ², ridge(λ)) for each σ² column and λ row.

    ``learners`` maps the training noise σ² to a predictor; each is evaluated on tasks with
    that noise (``n = d`` examples, MSPD over prefixes ``1 … d−1``). Returns
    ``(matrix (len(lams), len(learners)), noise_list)``.
    """
    from .predictors import ridge

    noises = list(learners)
    M = np.full((len(lams), len(noises)), np.nan)
    for j, s2 in enumerate(noises):
        from .data import sample_tasks

        t = sample_tasks(n_tasks, d, d, noise_var=s2, prior_var=prior_var, seed=seed + j)
        L = predict_prefixes(as_predictor(learners[s2]), t.X, t.y)
        for i, lam in enumerate(lams):
            M[i, j] = mspd(L, predict_prefixes(ridge(lam), t.X, t.y), d)
    return M, noises
