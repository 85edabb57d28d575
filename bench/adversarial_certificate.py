"""Tightness of the certificate: certify(n).max_abs_error / worst error an adversarial search finds.

    nohup nice -n 10 python bench/adversarial_certificate.py &

Writes the table between the ``bench:tightness`` markers of ``docs/certificate.md`` and
appends each row to ``bench/results/adversarial_certificate.jsonl`` as it is measured.
"""
from __future__ import annotations

import datetime
import json
import platform
import re
from pathlib import Path

import torch

import iclconstruct as ic
from iclconstruct.numerics.adversary import worst_error

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "adversarial_certificate.jsonl"

CASES = [
    ("sgd d=4 lr=0.03", lambda dt: ic.circuits.sgd(4, 0.03, dtype=dt, max_len=65)),
    ("sgd d=8 lr=0.03", lambda dt: ic.circuits.sgd(8, 0.03, dtype=dt, max_len=65)),
    ("ridge d=2 lam=1", lambda dt: ic.circuits.ridge(2, 1.0, dtype=dt, max_len=65)),
    ("ridge d=4 lam=1", lambda dt: ic.circuits.ridge(4, 1.0, dtype=dt, max_len=65)),
    ("batch_gd d=2 lr=0.05 steps=2", lambda dt: ic.circuits.batch_gd(2, 0.05, 2, max_n=16, dtype=dt)),
    ("newton d=2 steps=3", lambda dt: ic.circuits.newton(2, 3, max_n=16, dtype=dt)),
    ("gd_plus_plus d=2 lr=0.05 gamma=0.1", lambda dt: ic.circuits.gd_plus_plus(2, 0.05, 0.1, max_n=16, dtype=dt)),
    ("preconditioned_gd d=2 lr=0.05", lambda dt: ic.circuits.preconditioned_gd(2, 0.05, max_n=16, dtype=dt)),
]
#: the search: the corners of the input box (and Gaussian starts), then rounds of local search
SEARCH = dict(corners=256, rounds=16, batch=32)


def main() -> None:
    torch.set_num_threads(1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, make in CASES:
        for dt in (torch.float64, torch.float32):
            m = make(dt)
            for n in (1, 4, 16):
                if 2 * n + 1 > m.max_len:
                    continue
                cert = m.certify(n).max_abs_error
                found = worst_error(m, n, **SEARCH)
                ratio = cert / found.error if found.error > 0 else float("inf")
                row = {"circuit": name, "dtype": str(dt).replace("torch.", ""), "n": n, "certificate": cert,
                       "worst_found": found.error, "ratio": ratio, "spurious_refusals": found.refused}
                rows.append(row)
                with OUT.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(row, flush=True)
    stamp = (f"_Measured {datetime.date.today()} by `python bench/adversarial_certificate.py` on "
             f"{platform.machine()}, torch {torch.__version__}: `worst_error(m, n, "
             + ", ".join(f"{k}={v}" for k, v in SEARCH.items()) + ")` against `m.certify(n).max_abs_error`._")
    lines = [stamp, "", "| circuit | dtype | n | certificate | worst found | ratio |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['circuit']} | {r['dtype']} | {r['n']} | {r['certificate']:.2g} | {r['worst_found']:.2g} | "
                     f"{r['ratio']:.2g} |")
    doc = ROOT / "docs" / "certificate.md"
    text = doc.read_text()
    text = re.sub(r"<!-- bench:tightness -->.*<!-- /bench:tightness -->",
                  "<!-- bench:tightness -->\n" + "\n".join(lines) + "\n<!-- /bench:tightness -->", text, flags=re.S)
    doc.write_text(text)


if __name__ == "__main__":
    main()
