"""Command-line jobs of the empirical study: ``iclconstruct train | compare | sweep | probe``.

The package's main CLI (``iclconstruct.cli``) calls :func:`add_subcommands` on its
sub-parser collection; each sub-parser sets ``func`` to its handler, which takes the parsed
``argparse.Namespace`` and returns an exit code. Every job writes PNG figures and CSV/Markdown
tables into ``--out`` and prints where.

Learners are named by a shipped name (``lite-d8``), a checkpoint folder / ``.safetensors``
file, or ``circuit:NAME:PARAM`` for a compiled circuit ``ic.circuits.NAME(d, PARAM)``.
"""
from __future__ import annotations

import argparse
import csv
import json
from fractions import Fraction
from pathlib import Path

__all__ = ["add_subcommands", "run_train", "run_compare", "run_sweep_cmd", "run_probe", "resolve_learner", "max_points_of"]


def _num(s: str) -> float:
    try:
        v = float(Fraction(s))
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(f"expected a number or a fraction such as 1/16; got {s!r} ({exc})") from None
    return v


def add_subcommands(subparsers) -> None:
    """Register ``train``, ``compare``, ``sweep`` and ``probe`` on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser("train", help="train an in-context learner (paper App. D)",
                              description="Train an ICLTransformer on synthetic linear regression; writes "
                                          "model.safetensors, config.json, log.csv and loss.png into --out.")
    p.add_argument("--preset", default="lite", help="tiny | lite | ols-d4 | probe (see iclconstruct.icl.PRESETS)")
    p.add_argument("--out", required=True, help="output folder (an unfinished run there is resumed)")
    for flag, typ in [("--d", int), ("--layers", int), ("--width", int), ("--heads", int), ("--max-points", int),
                      ("--steps", int), ("--batch-size", int), ("--lr", float)]:
        p.add_argument(flag, type=typ, default=None, help="override the preset")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the model's initial weights and every training batch (same seed → identical run)")
    p.add_argument("--noise-var", type=_num, default=0.0, help="σ² of the label noise (fractions ok: 1/16)")
    p.add_argument("--prior-var", type=_num, default=1.0, help="τ² of the weight prior")
    p.add_argument("--no-curriculum", action="store_true", help="train at full d and n from the start")
    p.add_argument("--fixed-w-seed", type=int, default=None,
                   help="train on ONE fixed w ~ N(0, τ²I) drawn with this seed (the paper's probing control, §5)")
    p.add_argument("--init-from", default=None, help="checkpoint or shipped name whose weights start the run")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_train)

    shipped = _shipped_names()
    c = subparsers.add_parser("compare", help="compare learners with classical predictors (paper §4)",
                              description="SPD/ILWD per prefix length against OLS, ridge, GD, SGD, kNN, ... "
                                          "(Fig. 1) and, with --mspd, the noise × ridge-λ MSPD table (Fig. 2). "
                                          "Several --model values (trained learners and circuits) are ranked "
                                          "together: each is also compared with the others.")
    c.add_argument("--model", nargs="+", default=None, metavar="MODEL",
                   help=f"one or more learners: shipped ({', '.join(shipped) or 'none'}), a checkpoint path, or "
                        "circuit:NAME:PARAM (circuit:ridge:0.1, circuit:sgd:0.03; needs --d)")
    c.add_argument("--mspd", nargs="+", default=None, metavar="SIGMA2:MODEL",
                   help="learners trained at each noise, e.g. " + (" ".join(
                       f"{s2}:{nm}" for s2, nm in (("0", "lite-d8"), ("1/4", "lite-d8-s1_4")) if nm in shipped)
                       or "0:runs/s0 1/4:runs/s1_4") + "; builds the MSPD table")
    c.add_argument("--lams", nargs="+", type=_num, default=[0, 1 / 16, 1 / 9, 1 / 4, 4 / 9],
                   help="ridge λ rows of the MSPD table")
    c.add_argument("--out", required=True)
    c.add_argument("--d", type=int, default=None, help="dimension (default: the model's)")
    c.add_argument("--noise-var", type=_num, default=None, help="σ² of the evaluation tasks (default 0)")
    c.add_argument("--n-tasks", type=int, default=1000)
    c.add_argument("--n-points", type=int, default=None,
                   help="points per task, the last used as query (default 2d+1, or the largest every model's "
                        "context allows); more than a model's context is an error")
    c.add_argument("--device", default="cpu", help="torch device the trained learners run on (cpu, cuda, ...)")
    c.add_argument("--n-probe", type=int, default=0, help="probe inputs for ILWD/R² (0 = skip; needs >= d)")
    c.add_argument("--x-dist", default="normal", help="normal | scaled | shifted | skewed")
    c.add_argument("--seed", type=int, default=1234)
    c.set_defaults(func=run_compare)

    w = subparsers.add_parser("sweep", help="capacity sweep: layers × width, same budget (paper Fig. 3)",
                              description="Train one learner per (layers, width) cell with the same steps, data and "
                                          "schedule; write sweep.csv, sweep.md and sweep.png (closest of one-step GD, "
                                          "ridge(λ), OLS per cell, with SPD/d). Resumable: finished cells are skipped.")
    w.add_argument("--out", required=True, help="output folder (cells/, sweep.csv, sweep.md, sweep.png)")
    w.add_argument("--layers", nargs="+", type=int, default=[1, 2, 4, 8])
    w.add_argument("--widths", nargs="+", type=int, default=[16, 32, 64])
    w.add_argument("--d", type=int, default=4)
    w.add_argument("--heads", type=int, default=1, help="attention heads in every cell (paper: one suffices)")
    w.add_argument("--max-points", type=int, default=None, help="points per training/eval sequence (default 2d+1)")
    w.add_argument("--steps", type=int, default=4000, help="training steps per cell (the same for every cell)")
    w.add_argument("--batch-size", type=int, default=64)
    w.add_argument("--lr", type=float, default=1e-3)
    w.add_argument("--noise-var", type=_num, default=0.0)
    w.add_argument("--no-curriculum", action="store_true", help="train at full d and n from the start")
    w.add_argument("--curriculum-interval", type=int, default=None,
                   help="curriculum: d from ⌈d/2⌉ and n from 2⌈d/2⌉+1, +1 / +2 every this many steps "
                        "(default steps // 8, so full size is reached by ~40%% of the budget)")
    w.add_argument("--seed", type=int, default=0, help="seeds every cell's initial weights and training batches")
    w.add_argument("--n-tasks", type=int, default=1000, help="held-out tasks for SPD")
    w.add_argument("--gd-lrs", nargs="+", type=_num, default=[0.05, 0.1], help="one-step GD step sizes compared")
    w.add_argument("--lams", nargs="+", type=_num, default=[0.1, 0.5, 1.0], help="ridge λ compared")
    w.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    w.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    w.add_argument("--reevaluate", action="store_true",
                   help="train nothing: re-measure every finished cell under --out against --gd-lrs/--lams from its "
                        "saved weights (e.g. after adding reference predictors), then redraw the outputs")
    w.set_defaults(func=run_sweep_cmd)

    r = subparsers.add_parser("probe", help="probe hidden states for XᵀY and w_OLS (paper §5)",
                              description="Per-layer position-attention probes (linear / MLP) and closed-form "
                                          "readouts; writes probes.csv, probes.md and probes.png.")
    r.add_argument("--model", default="lite-d8", help=f"shipped ({', '.join(shipped) or 'none'}) or a checkpoint path")
    r.add_argument("--device", default="cpu", help="torch device the model runs on")
    r.add_argument("--out", required=True)
    r.add_argument("--n-tasks", type=int, default=4000)
    r.add_argument("--n-points", type=int, default=None,
                   help="context examples (default: 2d or the model's context if shorter; more is an error)")
    r.add_argument("--targets", nargs="+", default=["xty", "w_ols", "y_query"],
                   help="xty, w_ols (paper §5), y_query = wᵀx_q (positive control: what the model outputs), "
                        "w_ridge:LAM (the ridge circuit's slot), w_newton:K (the Newton circuit's)")
    r.add_argument("--methods", nargs="+", default=["linear", "mlp", "readout"])
    r.add_argument("--steps", type=int, default=200, help="Adam steps per position probe")
    r.add_argument("--control", action="store_true", help="also probe an untrained model of the same architecture")
    r.add_argument("--control-model", default=None,
                   help="also probe this learner as the control: the paper's is a model trained on one fixed w "
                        "(iclconstruct train --fixed-w-seed S ...)")
    r.add_argument("--d", type=int, default=None, help="dimension (needed for circuit:NAME:PARAM models)")
    r.add_argument("--seed", type=int, default=1234)
    r.set_defaults(func=run_probe)


# --------------------------------------------------------------------------- helpers
def _shipped_names():
    from .shipped import list_pretrained

    return list_pretrained()


#: public builders ic.circuits.NAME(d, param): the parameter is λ, the step size, or the number of Newton steps
_CIRCUIT_BUILDERS = ("ridge", "sgd", "batch_gd", "newton")


def resolve_learner(spec: str, d=None, device="cpu"):
    """Learner from a CLI spec: shipped name, checkpoint path, or ``circuit:NAME:PARAM``
    (``ic.circuits.NAME(d, PARAM)``: ``circuit:ridge:0.1``, ``circuit:sgd:0.03``; ``newton`` once the
    circuit zoo has it). Trained learners are moved to ``device``."""
    from ..errors import CheckpointError
    from .checkpoint import load
    from .shipped import list_pretrained, pretrained

    if spec.startswith("circuit:"):
        parts = spec.split(":")
        if len(parts) != 3 or d is None:
            raise CheckpointError(f"--model {spec!r}: circuit learners are written circuit:NAME:PARAM and need --d")
        from .. import circuits
        available = [n for n in _CIRCUIT_BUILDERS if callable(getattr(circuits, n, None))]
        builder = getattr(circuits, parts[1], None) if parts[1] in _CIRCUIT_BUILDERS else None
        if not callable(builder):
            raise CheckpointError(f"--model {spec!r}: no circuit named {parts[1]!r} in iclconstruct.circuits; "
                                  f"available: {available}")
        try:
            param = _num(parts[2])
        except (argparse.ArgumentTypeError, ValueError, ZeroDivisionError):
            raise CheckpointError(f"--model {spec!r}: PARAM {parts[2]!r} is not a number") from None
        if parts[1] == "newton":
            if param != int(param) or param < 1:
                raise CheckpointError(f"--model {spec!r}: PARAM is Newton's number of steps, a positive integer")
            param = int(param)
        obj = builder(d, param)
        try:
            obj.name = f"circuit:{parts[1]}:{parts[2]}"
        except AttributeError:
            pass
        return obj
    if spec in list_pretrained():
        m = pretrained(spec, device=device)
    elif Path(spec).exists():
        m = load(spec, device=device)
    else:
        raise CheckpointError(f"--model {spec!r} is neither a shipped learner {list_pretrained()} nor an existing path")
    m.name = Path(spec).stem if not Path(spec).is_dir() else Path(spec).name
    return m


def max_points_of(learner):
    """How many points (examples + query) ``learner`` can read, or ``None`` if unbounded/unknown:
    a trained model's ``config.max_points``; a circuit's ``max_len // 2`` (its prefix pass reads
    ``2n`` tokens)."""
    cfg = getattr(learner, "config", None)
    if cfg is not None and hasattr(cfg, "max_points"):
        return int(cfg.max_points)
    if getattr(learner, "max_len", None) is not None:
        return int(learner.max_len) // 2
    return None


def _safe(name: str) -> str:
    """A file-name-safe form of a learner name."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def _threads(n: int = 1) -> None:
    import torch

    from ..lang.validate import as_int

    torch.set_num_threads(as_int(n, "--threads", min=1))  # 0 or -1 is refused, not silently 1


def _write_md(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- train
def _maybe_init_distributed() -> None:
    """Under ``torchrun`` (WORLD_SIZE > 1) start the process group: NCCL on GPUs, Gloo on CPU."""
    import os

    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def run_train(args) -> int:
    import torch

    from .model import ICLTransformer
    from .plots import plot_loss
    from .shipped import list_pretrained, pretrained_path
    from .training import preset, train

    _threads(args.threads)
    _maybe_init_distributed()
    p = preset(args.preset)
    m, t = p["model"], p["train"]
    for key, attr in [("d", "d"), ("n_layers", "layers"), ("width", "width"), ("n_heads", "heads"),
                      ("max_points", "max_points")]:
        if getattr(args, attr) is not None:
            m[key] = getattr(args, attr)
    for key in ("steps", "batch_size", "lr"):
        if getattr(args, key) is not None:
            t[key] = getattr(args, key)
    if args.no_curriculum:
        t["curriculum"] = None
    init = args.init_from
    if init is not None and init in list_pretrained():
        init = str(pretrained_path(init))
    fixed_w = None
    if args.fixed_w_seed is not None:
        import numpy as np

        fixed_w = np.random.default_rng(args.fixed_w_seed).standard_normal(m["d"]) * np.sqrt(args.prior_var)
    model = ICLTransformer(**m, seed=args.seed)
    res = train(model, **t, noise_var=args.noise_var, prior_var=args.prior_var, out_dir=args.out,
                seed=args.seed, init_from=init, device=args.device, progress=not args.no_progress, fixed_w=fixed_w)
    out = Path(args.out)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        fig = plot_loss(res.history, out / "loss.png", title=f"training loss ({args.preset}, σ²={args.noise_var:g})")
        print(f"trained {res.step} steps in {res.seconds:.0f} s; final loss/d {res.history[-1]['loss_per_d']:.4f}")
        print(f"wrote {out / 'model.safetensors'}, {out / 'config.json'}, {out / 'log.csv'}, {fig}")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    del torch
    return 0


# --------------------------------------------------------------------------- compare
def run_compare(args) -> int:
    import numpy as np

    from .comparison import compare, mspd_table
    from .data import sample_tasks
    from .plots import plot_error_curves, plot_mspd_heatmap, plot_spd_curves
    from .predictors import default_predictors

    _threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if args.model is None and not args.mspd:
        raise SystemExit("compare: pass --model and/or --mspd")
    if args.model is not None:
        from ..errors import ContextTooLongError, ShapeError
        from .comparison import compare_many, ranking_markdown

        # trained learners first: their d lets circuit specs go without --d
        resolved = {spec: resolve_learner(spec, args.d, args.device) for spec in args.model
                    if not spec.startswith("circuit:")}
        d_hint = args.d or next((m.config.d for m in resolved.values() if hasattr(m, "config")), None)
        learners = [resolved[spec] if spec in resolved else resolve_learner(spec, d_hint, args.device)
                    for spec in args.model]
        dims = {getattr(getattr(l, "config", None), "d", None) or getattr(l, "d", None) for l in learners} - {None}
        d = args.d or (dims.pop() if len(dims) == 1 else None)
        if d is None or (dims and dims != {d}):
            raise ShapeError(f"--model learners have dimensions {sorted(dims)}; pass models of one d (and --d {d or 'D'})")
        caps = {l.name: max_points_of(l) for l in learners if max_points_of(l) is not None}
        cap = min(caps.values()) if caps else None
        if args.n_points is not None:
            n_pts = args.n_points
            too_short = {k: v for k, v in caps.items() if v < n_pts}
            if too_short:
                raise ContextTooLongError(
                    f"--n-points {n_pts} exceeds the context of {too_short} (points a model can read); "
                    f"pass --n-points <= {min(too_short.values())} or drop those models")
        else:
            n_pts = 2 * d + 1 if cap is None else min(2 * d + 1, cap)
        noise = args.noise_var or 0.0
        tasks = sample_tasks(args.n_tasks, n_pts, d, noise_var=noise, x_dist=args.x_dist, seed=args.seed)
        tables = compare_many(learners, tasks, default_predictors(noise), n_probe=args.n_probe, seed=args.seed)
        multi = len(tables) > 1
        for table in tables:
            tag = "" if not multi else "_" + _safe(table.learner)
            written += [table.to_csv(out / f"compare{tag}.csv"),
                        _write_md(out / f"compare{tag}.md", table.to_markdown()),
                        plot_error_curves(table, out / f"error_vs_examples{tag}.png"),
                        plot_spd_curves(table, out / f"spd_vs_examples{tag}.png")]
            best = table.summary()
            print(f"closest predictor to {table.learner} (mean SPD/d over prefixes 1..{min(2 * d, n_pts - 1)}): "
                  f"{best[0][0]} ({best[0][1]:.4g}); next {best[1][0]} ({best[1][1]:.4g})")
        if multi:
            text = ranking_markdown(tables)
            if args.n_probe:
                text += "\n" + ranking_markdown(tables, key="ilwd_per_d")
            written.append(_write_md(out / "ranking.md", text))
            with (out / "compare.csv").open("w", newline="") as fh:  # all learners, one header
                for i, t in enumerate(tables):
                    lines = (out / f"compare_{_safe(t.learner)}.csv").read_text().splitlines(True)
                    fh.write("".join(lines if i == 0 else lines[1:]))
            written.append(out / "compare.csv")
    if args.mspd:
        learners, d = {}, args.d
        for item in args.mspd:
            s2, _, spec = item.partition(":")
            lr_ = resolve_learner(spec, d, args.device)
            d = d or lr_.config.d
            learners[_num(s2)] = lr_
        M, noises = mspd_table(learners, args.lams, d, n_tasks=args.n_tasks, seed=args.seed)
        rows = [f"Ridge({Fraction(l).limit_denominator(100)})" if l else "OLS" for l in args.lams]
        cols = [str(Fraction(s).limit_denominator(100)) for s in noises]
        with (out / "mspd.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["predictor"] + [f"sigma2={c}" for c in cols])
            for name, row in zip(rows, M):
                w.writerow([name] + [f"{v:.6g}" for v in row])
        md = ["| predictor | " + " | ".join(f"σ²={c}" for c in cols) + " |", "|---|" + "---|" * len(cols)]
        for i, (name, row) in enumerate(zip(rows, M)):
            md.append(f"| {name} | " + " | ".join(
                (f"**{v:.3g}**" if i == int(np.nanargmin(M[:, j])) else f"{v:.3g}") for j, v in enumerate(row)) + " |")
        written += [out / "mspd.csv", _write_md(out / "mspd.md", "\n".join(md) + "\n"),
                    plot_mspd_heatmap(M, rows, cols, out / "mspd_heatmap.png")]
        for j, c in enumerate(cols):
            print(f"σ²={c}: closest ridge {rows[int(np.nanargmin(M[:, j]))]} (MSPD {np.nanmin(M[:, j]):.3g})")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


# --------------------------------------------------------------------------- sweep
def _sweep_curriculum(args) -> dict:
    import math

    d0 = max(1, math.ceil(args.d / 2))
    interval = args.curriculum_interval or max(1, args.steps // 8)
    return dict(d_start=d0, n_start=2 * d0 + 1, interval=interval, d_step=1, n_step=2)


def run_sweep_cmd(args) -> int:
    import torch

    from .sweep import reevaluate_sweep, reference_predictors, run_sweep, write_outputs

    _threads(args.threads)
    if args.reevaluate:
        rows = reevaluate_sweep(args.out, reference_predictors(args.gd_lrs, args.lams), n_tasks=args.n_tasks,
                                noise_var=args.noise_var)
        files = write_outputs(args.out)
        print(f"{len(rows)} cells re-evaluated; wrote " + ", ".join(str(f) for f in files))
        return 0
    _maybe_init_distributed()
    rows = run_sweep(args.out, args.layers, args.widths, d=args.d, n_heads=args.heads, max_points=args.max_points,
                     steps=args.steps, batch_size=args.batch_size, lr=args.lr, noise_var=args.noise_var,
                     curriculum=None if args.no_curriculum else _sweep_curriculum(args), seed=args.seed,
                     n_tasks=args.n_tasks,
                     predictors=reference_predictors(args.gd_lrs, args.lams), device=args.device)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        files = write_outputs(args.out)
        print(f"{len(rows)} cells finished; wrote " + ", ".join(str(f) for f in files))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


# --------------------------------------------------------------------------- probe
def _hidden_states(learner, X, y, xq):
    from .probes import circuit_hidden_states, model_hidden_states

    if hasattr(learner, "hidden_states"):
        return model_hidden_states(learner, X, y, xq)
    if hasattr(learner, "run_with_cache"):
        return circuit_hidden_states(learner, X, y, xq)
    from ..errors import ShapeError

    raise ShapeError(f"{getattr(learner, 'name', learner)!r} exposes no hidden states to probe")


def run_probe(args) -> int:
    from .data import sample_tasks
    from .model import ICLTransformer
    from .plots import plot_probe_alpha, plot_probes
    from .probes import probe_layers, probe_target

    _threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = resolve_learner(args.model, d=args.d, device=args.device)
    d = args.d or getattr(getattr(model, "config", None), "d", None) or model.d
    cap = max_points_of(model)
    if cap is not None and args.n_points is not None and args.n_points > cap - 1:
        from ..errors import ContextTooLongError

        raise ContextTooLongError(f"--n-points {args.n_points} exceeds {model.name}'s context of "
                                  f"{cap - 1} examples (+ query); pass --n-points <= {cap - 1}")
    n = args.n_points or (2 * d if cap is None else min(2 * d, cap - 1))
    tasks = sample_tasks(args.n_tasks, n + 1, d, seed=args.seed)
    X, y, xq = tasks.X[:, :n], tasks.y[:, :n], tasks.X[:, n]
    targets = {t: probe_target(X, y, t, x_query=xq, w=tasks.w) for t in args.targets}
    results = probe_layers(_hidden_states(model, X, y, xq), targets, args.methods, steps=args.steps, seed=args.seed)
    rows = [dict(model=model.name, **r.as_row()) for r in results]
    controls = []
    if args.control:
        import torch

        torch.manual_seed(args.seed)
        controls.append(("control(untrained)", ICLTransformer.from_config(model.config, seed=args.seed).eval()))
    if args.control_model:
        cm = resolve_learner(args.control_model, d=d, device=args.device)
        controls.append((f"control({cm.name})", cm))
    all_results = list(results)
    for cname, cm in controls:
        cres = probe_layers(_hidden_states(cm, X, y, xq), targets, args.methods, steps=args.steps, seed=args.seed)
        rows += [dict(model=cname, **r.as_row()) for r in cres]
        for r in cres:
            r.method = f"{r.method} ({cname})"
        all_results += cres
    with (out / "probes.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = ["| model | layer | target | method | held-out rel. MSE | train rel. MSE |", "|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['layer']} | {r['target']} | {r['method']} | {r['test_rel_err']:.3g} | "
           f"{r['train_rel_err']:.3g} |" for r in rows]
    best = {}
    for r in rows:
        k = (r["model"], r["target"], r["method"])
        if k not in best or r["test_rel_err"] < best[k]["test_rel_err"]:
            best[k] = r
    md += ["", "Best layer per model, target and probe:", "", "| model | target | probe | best layer | held-out rel. MSE |",
           "|---|---|---|---|---|"]
    md += [f"| {m} | {t} | {me} | {r['layer']} | {r['test_rel_err']:.3g} |" for (m, t, me), r in sorted(best.items())]
    _write_md(out / "probes.md", "\n".join(md) + "\n")
    with (out / "probe_alpha.csv").open("w", newline="") as fh:  # the position weights behind probe_alpha.png
        w = csv.writer(fh)
        w.writerow(["model", "layer", "target", "method"] + [f"alpha{t}" for t in range(2 * n + 1)])
        for r in all_results:
            if r.alpha is not None:
                w.writerow([model.name, r.layer, r.target, r.method] + [f"{a:.6g}" for a in r.alpha])
    xlabel = "layer (0 = embedding)" if hasattr(model, "hidden_states") else "layer (0 = after the first circuit layer)"
    figs = [plot_probes(all_results, out / "probes.png", title=f"Probes on {model.name} (d = {d}, n = {n})", xlabel=xlabel)]
    if any(r.alpha is not None for r in results):
        figs.append(plot_probe_alpha(results, n, out / "probe_alpha.png",
                                     title=f"Learned position weights α of the probes on {model.name}"))
    print(f"wrote {out / 'probes.csv'}, {out / 'probes.md'}, " + ", ".join(str(f) for f in figs))
    for (m, t, me), r in sorted(best.items()):
        print(f"  {m:>28s}  {t:>12s}  {me:>8s}: best layer {r['layer']}, held-out rel. MSE {r['test_rel_err']:.3g}")
    (out / "probe_settings.json").write_text(json.dumps(vars(args), default=str, indent=2))
    return 0


def _main(argv=None) -> int:  # pragma: no cover - convenience for `python -m iclconstruct.icl.cli`
    ap = argparse.ArgumentParser(prog="iclconstruct")
    add_subcommands(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
