"""The reliability table of docs/reliability.md: misuse cases and corrupted files, by class.

    nice -n 10 python bench/misuse_table.py --files 600 --learner-files 150 > bench/results/misuse_table.md

Runs every case of ``tests/test_misuse.py`` (the catalogue ``CASES``) and then corrupts
saved files with the mutations of :mod:`iclconstruct.fuzzing` (seeded, so the table is
reproducible): ``--files`` mutations of a saved SGD circuit (byte flips, truncations and
hostile field edits of ``circuit.json``, in equal parts) and ``--learner-files`` byte flips
and truncations of the shipped learner ``lite-d8``. Each outcome is one of: a clear library
error naming an argument the caller has, the right answer (or an identical model), another
exception, or a silent wrong answer. Prints a Markdown table.
"""
import argparse
import importlib.util
import random
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import torch

import iclconstruct as ic
from iclconstruct.fuzzing import edit_field, flip_byte, load_outcome, truncate

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {1: "missing or malformed arguments", 2: "programs the compiler could get wrong",
           3: "values inside bounds where approximations fail", 4: "constants that break the model",
           5: "saved circuits", 6: "learner checkpoints", 7: "command line", 8: "threads",
           9: "messages name the caller's arguments"}


def load_cases():
    spec = importlib.util.spec_from_file_location("test_misuse", ROOT / "tests" / "test_misuse.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["test_misuse"] = mod
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=600)
    ap.add_argument("--learner-files", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    mod = load_cases()
    rows = defaultdict(Counter)
    failures = []
    for case in mod.CASES:
        kind, detail = mod.outcome(case)
        rows[(case.cls, "cases")][{"clear": "clear", "right": "right", "unclear": "silent", "silent": "silent",
                                   "other": "other"}[kind]] += 1
        if kind not in ("clear", "right"):
            failures.append(f"class {case.cls} {case.name}: {kind}: {detail}")
    rng = random.Random(args.seed)
    model = ic.circuits.sgd(2, 0.05, lam=0.1, max_len=17)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        ic.io.save(model, src)
        for i in range(args.files):
            folder = Path(tmp) / f"f{i}"
            shutil.copytree(src, folder)
            how = ("flip", "truncate", "edit")[i % 3]
            if how == "edit":
                what = edit_field(folder / "circuit.json", rng)
            else:
                target = folder / rng.choice(["circuit.json", "model.safetensors"])
                what = (flip_byte if how == "flip" else truncate)(target, rng)
            kind, detail = load_outcome(folder, model, ic.io.load)
            rows[(5, "files")][{"refused": "clear", "identical": "right", "crash": "other", "silent": "silent"}[kind]] += 1
            if kind in ("crash", "silent"):
                failures.append(f"circuit file {what}: {kind}: {detail}")
            shutil.rmtree(folder)
    from iclconstruct.icl.shipped import pretrained, pretrained_path

    learner = pretrained("lite-d8")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.learner_files):
            f = Path(tmp) / f"m{i}.safetensors"
            shutil.copy(pretrained_path("lite-d8"), f)
            what = (flip_byte if i % 2 == 0 else truncate)(f, rng)
            kind, detail = load_outcome(f, learner, ic.icl.load)
            rows[(6, "files")][{"refused": "clear", "identical": "right", "crash": "other", "silent": "silent"}[kind]] += 1
            if kind in ("crash", "silent"):
                failures.append(f"learner file {what}: {kind}: {detail}")
            f.unlink()
    print("| class | what | cases | clear library error | right answer / identical model | other exception | silent |")
    print("|---|---|---:|---:|---:|---:|---:|")
    tot = Counter()
    for (cls, what), c in sorted(rows.items()):
        n = sum(c.values())
        tot.update(c)
        tot["n"] += n
        label = CLASSES[cls] + (" (corrupted files)" if what == "files" else "")
        print(f"| {cls} | {label} | {n} | {c['clear']} | {c['right']} | {c['other']} | {c['silent']} |")
    print(f"| | **total** | **{tot['n']}** | **{tot['clear']}** | **{tot['right']}** | **{tot['other']}** | "
          f"**{tot['silent']}** |")
    for f in failures:
        print(f"\n- {f}")


if __name__ == "__main__":
    main()
