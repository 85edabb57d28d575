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

    rows = run_demo(seed=args.seed, d=args.d, n=args.n, batch=args.batch)
    return 0 if all(err <= 1e-6 for _, err in rows) else 1


def _run_circuit(args) -> int:
    from . import circuits

    if args.name == "sgd":
        m = circuits.sgd(args.d, args.lr, lam=args.lam)
    else:
        m = circuits.ridge(args.d, args.lam if args.lam > 0 else 0.1)
    print(m.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="iclconstruct", description=__doc__.splitlines()[0])
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
    c.add_argument("--lr", type=float, default=0.01)
    c.add_argument("--lam", type=float, default=0.0)
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
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
