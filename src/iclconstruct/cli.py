"""Command line: ``iclconstruct demo | circuit | train | compare | probe``.

``demo`` is the main job (compile primitives and the paper's circuits, check them
against their references); ``circuit`` prints a circuit's summary and cost table;
``train``, ``compare`` and ``probe`` run the empirical study (:mod:`iclconstruct.icl`).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

__all__ = ["main", "build_parser"]


def _run_demo(args) -> int:
    from .demo import run_demo
    from .lang.validate import as_int

    d = as_int(args.d, "--d", min=1, max=64)
    n = as_int(args.n, "--n", min=1, max=256)
    batch = as_int(args.batch, "--batch", min=1, max=4096)
    seed = as_int(args.seed, "--seed", min=0)
    rows = run_demo(seed=seed, d=d, n=n, batch=batch)
    return 0 if all(err <= 1e-6 for _, err in rows) else 1


def _run_circuit(args) -> int:
    from . import circuits
    from .errors import ArgumentError

    import torch

    dtype = {"float64": torch.float64, "float32": torch.float32}[args.dtype]
    # the circuit functions validate every value, exactly as when called from Python
    if args.name == "sgd":
        if args.form is not None:
            raise ArgumentError("--form is a parameter of the ridge circuit (outer or gain); sgd has one form")
        m = circuits.sgd(args.d, 0.01 if args.lr is None else args.lr, lam=0.0 if args.lam is None else args.lam,
                         dtype=dtype)
    else:
        if args.lr is not None:
            raise ArgumentError("--lr is a parameter of the sgd circuit; ridge takes --lam")
        m = circuits.ridge(args.d, 0.1 if args.lam is None else args.lam, dtype=dtype, form=args.form)
    print(m.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="iclconstruct", description=__doc__.splitlines()[0])
    ap.add_argument("--debug", action="store_true", help="show the full traceback of library errors")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="compile primitives and the paper's circuits; check them against references")
    d.add_argument("--d", type=int, default=4)
    d.add_argument("--n", type=int, default=8, help="examples per task")
    d.add_argument("--batch", type=int, default=16)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_run_demo)
    c = sub.add_parser("circuit", help="print a circuit's layers, ops, slot layout and costs")
    c.add_argument("name", choices=["sgd", "ridge"])
    c.add_argument("--d", type=int, default=4)
    c.add_argument("--lr", type=float, default=None, help="sgd step size (default 0.01)")
    c.add_argument("--lam", type=float, default=None, help="L2 weight: sgd default 0, ridge default 0.1 (must be > 0)")
    c.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    c.add_argument("--form", choices=["outer", "gain"], default=None,
                   help="ridge's update: outer (3 layers per example) or gain (4; float32's default)")
    c.set_defaults(func=_run_circuit)
    try:
        from .icl.cli import add_subcommands
    except ImportError as exc:  # the [icl] extra is missing
        msg = str(exc)
        for name in ("train", "compare", "probe"):
            s = sub.add_parser(name, help=f"(needs pip install 'iclconstruct[icl]': {msg})")
            s.set_defaults(func=lambda a, m=msg: (print(f"install the [icl] extra: {m}", file=sys.stderr), 2)[1])
    else:
        add_subcommands(sub)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line. A library error prints one line ``iclconstruct: error: …`` to
    stderr and returns 2 (the traceback only with ``--debug``); other exceptions propagate."""
    from .errors import ICLConstructError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ICLConstructError as exc:
        if args.debug:
            raise
        msg = " ".join(str(exc).split())  # one line, whatever the message
        print(f"iclconstruct: error: {msg} ({type(exc).__name__}; rerun with --debug for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
