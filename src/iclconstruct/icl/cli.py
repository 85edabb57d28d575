"""Command-line jobs of the empirical study: ``iclconstruct train | compare | probe``.

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

__all__ = ["add_subcommands", "run_train", "run_compare", "run_probe", "resolve_learner"]


def _num(s: str) -> float:
    return float(Fraction(s))


def add_subcommands(subparsers) -> None:
    """Register ``train``, ``compare`` and ``probe`` on an ``argparse`` sub-parser collection."""
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

    c = subparsers.add_parser("compare", help="compare a learner with classical predictors (paper §4)",
                              description="SPD/ILWD per prefix length against OLS, ridge, GD, SGD, kNN, ... "
                                          "(Fig. 1) and, with --mspd, the noise × ridge-λ MSPD table (Fig. 2).")
    c.add_argument("--model", default=None, help="shipped name, checkpoint path, or circuit:NAME:PARAM")
    c.add_argument("--mspd", nargs="+", default=None, metavar="SIGMA2:MODEL",
                   help="learners trained at each noise, e.g. 0:lite-d8 1/4:lite-d8-s0.25; builds the MSPD table")
    c.add_argument("--lams", nargs="+", type=_num, default=[0, 1 / 16, 1 / 9, 1 / 4, 4 / 9],
                   help="ridge λ rows of the MSPD table")
    c.add_argument("--out", required=True)
    c.add_argument("--d", type=int, default=None, help="dimension (default: the model's)")
    c.add_argument("--noise-var", type=_num, default=None, help="σ² of the evaluation tasks (default 0)")
    c.add_argument("--n-tasks", type=int, default=1000)
    c.add_argument("--n-points", type=int, default=None, help="examples per task (default 2d+1, capped by the model)")
    c.add_argument("--n-probe", type=int, default=0, help="probe inputs for ILWD/R² (0 = skip; needs >= d)")
    c.add_argument("--x-dist", default="normal", help="normal | scaled | shifted | skewed")
    c.add_argument("--seed", type=int, default=1234)
    c.set_defaults(func=run_compare)

    r = subparsers.add_parser("probe", help="probe hidden states for XᵀY and w_OLS (paper §5)",
                              description="Per-layer position-attention probes (linear / MLP) and closed-form "
                                          "readouts; writes probes.csv, probes.md and probes.png.")
    r.add_argument("--model", default="lite-d8")
    r.add_argument("--out", required=True)
    r.add_argument("--n-tasks", type=int, default=4000)
    r.add_argument("--n-points", type=int, default=None, help="context examples (default: 2d, capped by the model)")
    r.add_argument("--targets", nargs="+", default=["xty", "w_ols", "y_query"],
                   help="xty, w_ols (paper §5) and y_query = wᵀx_q (positive control: what the model outputs)")
    r.add_argument("--methods", nargs="+", default=["linear", "mlp", "readout"])
    r.add_argument("--steps", type=int, default=200, help="Adam steps per position probe")
    r.add_argument("--control", action="store_true", help="also probe an untrained model of the same architecture")
    r.add_argument("--seed", type=int, default=1234)
    r.set_defaults(func=run_probe)


# --------------------------------------------------------------------------- helpers
def resolve_learner(spec: str, d=None):
    """Learner from a CLI spec: shipped name, checkpoint path, or ``circuit:NAME:PARAM``."""
    from ..errors import CheckpointError
    from .checkpoint import load
    from .shipped import list_pretrained, pretrained

    if spec.startswith("circuit:"):
        parts = spec.split(":")
        if len(parts) != 3 or d is None:
            raise CheckpointError("circuit learners are written circuit:NAME:PARAM and need --d")
        try:
            from .. import circuits  # written by the constructions half of the package
        except ImportError as exc:
            raise CheckpointError(f"iclconstruct.circuits is not available: {exc}") from None
        obj = getattr(circuits, parts[1])(d, _num(parts[2]))
        if not hasattr(obj, "name"):
            try:
                obj.name = f"circuit {parts[1]}({parts[2]})"
            except AttributeError:
                pass
        return obj
    if spec in list_pretrained():
        m = pretrained(spec)
    elif Path(spec).exists():
        m = load(spec)
    else:
        raise CheckpointError(f"--model {spec!r} is neither a shipped learner {list_pretrained()} nor an existing path")
    m.name = Path(spec).stem if not Path(spec).is_dir() else Path(spec).name
    return m


def _threads(n: int = 1) -> None:
    import torch

    torch.set_num_threads(max(1, n))


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
        learner = resolve_learner(args.model, args.d)
        d = args.d or learner.config.d
        n_pts = args.n_points or 2 * d + 1
        if hasattr(learner, "config"):
            n_pts = min(n_pts, learner.config.max_points)
        noise = args.noise_var or 0.0
        tasks = sample_tasks(args.n_tasks, n_pts, d, noise_var=noise, x_dist=args.x_dist, seed=args.seed)
        table = compare(learner, tasks, default_predictors(noise), n_probe=args.n_probe, seed=args.seed)
        written += [table.to_csv(out / "compare.csv"), _write_md(out / "compare.md", table.to_markdown()),
                    plot_error_curves(table, out / "error_vs_examples.png"),
                    plot_spd_curves(table, out / "spd_vs_examples.png")]
        best = table.summary()
        print(f"closest predictor to {table.learner} (mean SPD/d over prefixes 1..{2 * d}): "
              f"{best[0][0]} ({best[0][1]:.4g}); next {best[1][0]} ({best[1][1]:.4g})")
    if args.mspd:
        learners, d = {}, args.d
        for item in args.mspd:
            s2, _, spec = item.partition(":")
            lr_ = resolve_learner(spec, d)
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


# --------------------------------------------------------------------------- probe
def run_probe(args) -> int:
    from .data import sample_tasks
    from .model import ICLTransformer
    from .plots import plot_probes
    from .probes import model_hidden_states, probe_layers, probe_target

    _threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = resolve_learner(args.model)
    cfg = model.config
    n = min(args.n_points or 2 * cfg.d, cfg.max_points - 1)
    tasks = sample_tasks(args.n_tasks, n + 1, cfg.d, seed=args.seed)
    X, y, xq = tasks.X[:, :n], tasks.y[:, :n], tasks.X[:, n]
    targets = {t: probe_target(X, y, t, x_query=xq, w=tasks.w) for t in args.targets}
    results = probe_layers(model_hidden_states(model, X, y, xq), targets, args.methods, steps=args.steps, seed=args.seed)
    rows = [dict(model=model.name, **r.as_row()) for r in results]
    if args.control:
        import torch

        torch.manual_seed(args.seed)
        ctrl = ICLTransformer.from_config(cfg).eval()
        cres = probe_layers(model_hidden_states(ctrl, X, y, xq), targets, args.methods, steps=args.steps, seed=args.seed)
        rows += [dict(model="control(untrained)", **r.as_row()) for r in cres]
        for r in cres:
            r.method = f"{r.method} (control)"
        results = results + cres
    with (out / "probes.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = ["| model | layer | target | method | held-out rel. MSE |", "|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['layer']} | {r['target']} | {r['method']} | {r['test_rel_err']:.3g} |" for r in rows]
    _write_md(out / "probes.md", "\n".join(md) + "\n")
    fig = plot_probes(results, out / "probes.png", title=f"Probes on {model.name} (d = {cfg.d}, n = {n})")
    print(f"wrote {out / 'probes.csv'}, {out / 'probes.md'}, {fig}")
    (out / "probe_settings.json").write_text(json.dumps(vars(args), default=str, indent=2))
    return 0


def _main(argv=None) -> int:  # pragma: no cover - convenience for `python -m iclconstruct.icl.cli`
    ap = argparse.ArgumentParser(prog="iclconstruct")
    add_subcommands(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
