"""Shared by the CLI tests: run an ``iclconstruct`` subcommand in-process and return its exit code."""
import argparse

from iclconstruct.icl.cli import add_subcommands


def run(argv):
    ap = argparse.ArgumentParser(prog="iclconstruct")
    add_subcommands(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(argv)
    return args.func(args)
